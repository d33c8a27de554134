"""The model's config object, and what config.json alone can refuse before any weight is read.

`build` is the config the loader builds: light's view of a plain Llama config (no transformers), else transformers'
AutoConfig, which refuses a model_type it does not know. `check_before_weights` asks the same of a config.json, with
the loader's quantization check: `pull` before it fetches the weights, `yi-chat models` for a snapshot cut short.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LoadError, first_line
from . import light, quantized


def quiet_transformers() -> None:
    """Before transformers loads anything of ours: no per-tensor progress bars (the CLI shows one status line), and
    no load reports or warnings burying our one-line errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def build(path: Path, cfg: dict, quant: bool, trust_remote_code: bool):
    """The model's config from config.json's dict cfg: a plain Llama config read from the dict, without transformers
    (which only loads when asked: light.py), else transformers' own, which refuses a model_type it does not know."""
    config = light.llama_view(cfg, lambda: _auto_config(path, cfg, quant, trust_remote_code))
    return config or _auto_config(path, cfg, quant, trust_remote_code)


def _auto_config(path: Path, cfg: dict, quant: bool, trust_remote_code: bool):
    quiet_transformers()
    from transformers import AutoConfig

    try:
        if not trust_remote_code and "auto_map" not in cfg:
            from transformers import CONFIG_MAPPING

            cls = CONFIG_MAPPING[cfg["model_type"]] if cfg.get("model_type") in CONFIG_MAPPING else None
            floats = _float_fields(cls, cfg) if cls is not None else {}
            if cls is not None and (floats or bom(path / "config.json")):
                # transformers' json.load refuses the BOM ours reads past; its config classes refuse an integer
                # where they declare a float ("rms_norm_eps": 0 or 1, as a hand or a JSON writer puts it): the
                # fast engine chatted, --engine generate and /model failed. cfg's fields, as from_pretrained reads
                return cls.from_dict({**cfg, **floats})
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code and not quant)
    except Exception as e:
        raise LoadError(f"{path / 'config.json'}: {first_line(e)}") from None


def _float_fields(cls, cfg: dict) -> dict:
    """cfg's integer values of the fields config class cls declares a float (or a float or None), as floats."""
    declared = {}
    for klass in reversed(cls.__mro__):
        declared.update(vars(klass).get("__annotations__", {}))
    return {k: float(v) for k, v in cfg.items() if type(v) is int and _a_float(declared.get(k)) and abs(v) <= 1 << 53}


def _a_float(annotation) -> bool:
    """A field declared a float, or a float or None (`float | None`: Gemma 2's final_logit_softcapping), not int."""
    import typing

    if annotation in (float, "float"):
        return True
    if isinstance(annotation, str):
        return annotation.replace(" ", "") in ("float|None", "None|float", "Optional[float]")
    args = set(typing.get_args(annotation))
    return float in args and args <= {float, type(None)}


def bom(f: Path) -> bool:
    """f begins with UTF-8's byte-order mark (a Windows editor's save): read by yi-chat, refused by transformers'
    own reader ("is not a valid JSON file"): the fast engine chatted where /model and --engine generate failed."""
    try:
        with open(f, "rb") as fh:
            return fh.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False


def check_before_weights(path: Path, cfg: dict, names: list[str]) -> dict | None:
    """LoadError where the loader would refuse the checkpoint at `path` for its config.json (cfg, its sizes checked
    already) and the names of its files: a quantization it does not run, or one the weights' names contradict, or a
    model_type transformers does not know. A model of its own code (auto_map) is left to -m --trust-remote-code.
    Returns the quantization settings (quantized.detect), None for a plain checkpoint."""
    quant = quantized.detect(path, cfg, names)
    check_type(path, cfg, quant is not None)
    return quant


def check_type(path: Path, cfg: dict, quant: bool) -> None:
    """LoadError where transformers does not know the config's model_type; a model of its own code (auto_map) is
    left to -m --trust-remote-code."""
    if "auto_map" not in cfg:
        build(path, cfg, quant, trust_remote_code=False)
