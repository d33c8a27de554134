"""/model: what is loaded — config summary, quantization, sizes, device, and the module tree (the seed chapter's
"UML analysis" of Yi's structure)."""
from __future__ import annotations

from rich.table import Table
from rich.tree import Tree

from .qlinear import QuantLinear


def summary(loaded) -> Table:
    cfg, m = loaded.config, loaded.model
    # Quantized linears hold packed codes in buffers: count their logical in·out weights instead.
    quantized = [q for q in m.modules() if isinstance(q, QuantLinear)]
    params = sum(p.numel() for p in m.parameters()) + sum(q.in_features * q.out_features for q in quantized)
    nbytes = sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))
    q = loaded.quant
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    rows = [
        ("model", str(loaded.path)),
        ("architecture", type(m).__name__),
        ("layers", getattr(cfg, "num_hidden_layers", "?")),
        ("hidden / intermediate", f"{getattr(cfg, 'hidden_size', '?')} / {getattr(cfg, 'intermediate_size', '?')}"),
        ("heads / kv heads", f"{getattr(cfg, 'num_attention_heads', '?')} / {getattr(cfg, 'num_key_value_heads', '?')}"),
        ("vocab", getattr(cfg, "vocab_size", "?")),
        ("context", loaded.context_length),
        ("rope theta", theta or getattr(cfg, "rope_theta", "?")),
        ("quantization", f"{q['method']} int{q['bits']}, group {q.get('group_size')}" if q else "none"),
        ("parameters", f"{params / 1e6:.1f} M"),
        ("memory", f"{nbytes / 2**20:.1f} MiB"),
        ("device / dtype", f"{loaded.device} / {str(loaded.dtype).replace('torch.', '')}"),
    ]
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, str(v))
    return t


def tree(model, max_children: int = 3) -> Tree:
    """The module tree; runs of identical layers (ModuleList) are folded after `max_children`."""
    root = Tree(f"{type(model).__name__}")

    def add(node, module):
        children = list(module.named_children())
        for i, (name, child) in enumerate(children):
            if name.isdigit() and i >= max_children:
                node.add(f"... {len(children) - max_children} more {type(child).__name__} layers")
                break
            shape = ""
            w = getattr(child, "weight", None)
            if isinstance(child, QuantLinear):  # a quantized linear: its buffers are packed codes, not [out, in]
                shape = f" ({child.extra_repr()})"
            elif w is not None and not list(child.children()):
                shape = f" {tuple(w.shape)} {str(w.dtype).replace('torch.', '')}"
            add(node.add(f"{name}: {type(child).__name__}{shape}"), child)

    add(root, model)
    return root
