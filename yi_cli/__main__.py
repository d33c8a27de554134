from .ui.cli import entry

entry()
