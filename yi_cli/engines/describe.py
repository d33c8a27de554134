"""/model: what is loaded — config summary, quantization, sizes, device, and the module tree (the seed chapter's
"UML analysis" of Yi's structure). The fast runtime keeps no transformers model, so the tree and the parameter
count come from the config's model built on the meta device (shapes only, no memory)."""

from __future__ import annotations

from rich.table import Table
from rich.tree import Tree

from ..checkpoint.family import repo_of


def describe(engine) -> list:
    from ..runtime.hf import meta_model
    from ..runtime.qlinear import QuantLinear

    ckpt = engine.ckpt
    if engine.model is not None:  # generate: the real model; its packed linears count as in·out weights
        model = engine.model
        packed = [q for q in model.modules() if isinstance(q, QuantLinear)]
        params = sum(p.numel() for p in model.parameters()) + sum(q.in_features * q.out_features for q in packed)
        nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    else:
        model = meta_model(ckpt.hf_config, engine.decoder.model.dtype)
        params = sum(p.numel() for p in model.parameters())
        nbytes = engine.decoder.model.weight_bytes()
    table = summary(ckpt, type(model).__name__, params, nbytes, engine.context_length)
    return [table, f"engine: {engine.backend}", tree(model, ckpt)]


def summary(ckpt, arch: str, params: int, nbytes: int, context: int | None = None) -> Table:
    """context: the session's limit (--context, free memory), shown next to the model's when lower."""
    cfg, q = ckpt.config, ckpt.quant
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    repo = repo_of(ckpt.path)  # a hub snapshot: its id, then where its files are (the path alone hid the name)
    rows = [
        *([("model", repo), ("files", str(ckpt.path))] if repo else [("model", str(ckpt.path))]),
        ("architecture", arch),
        ("layers", getattr(cfg, "num_hidden_layers", "?")),
        ("hidden / intermediate", f"{getattr(cfg, 'hidden_size', '?')} / {getattr(cfg, 'intermediate_size', '?')}"),
        (
            "heads / kv heads",
            f"{getattr(cfg, 'num_attention_heads', '?')} / {getattr(cfg, 'num_key_value_heads', '?')}",
        ),
        ("vocab", getattr(cfg, "vocab_size", "?")),
        (
            "context",
            f"{context} (model {ckpt.context_length})"
            if context and context < ckpt.context_length
            else ckpt.context_length,
        ),
        ("rope theta", theta or getattr(cfg, "rope_theta", "?")),
        ("quantization", f"{q['method']} int{q['bits']}, group {q.get('group_size')}" if q else "none"),
        ("parameters", f"{params / 1e6:.1f} M"),
        ("memory", f"{nbytes / 2**20:.1f} MiB"),
        ("device / dtype", f"{ckpt.device} / {str(ckpt.dtype).replace('torch.', '')}"),
    ]
    t = Table(show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(overflow="fold")  # a hub snapshot's path (100 characters and more) was cut to "…" at 80 columns
    for k, v in rows:
        t.add_row(k, str(v))
    return t


def tree(model, ckpt=None, max_children: int = 3) -> Tree:
    """The module tree; a run of layers (ModuleList) is shown by its first where all are alike (it printed three in
    full, ~60 lines, before "... 27 more"), else folded after `max_children`. Projections stored packed are shown
    with their format."""
    from ..runtime.qlinear import QuantLinear

    root = Tree(f"{type(model).__name__}")
    q = ckpt.quant if ckpt is not None else None

    def label(name, child, full) -> str:
        shape = ""
        w = getattr(child, "weight", None)
        if isinstance(child, QuantLinear):  # a quantized linear: its buffers are packed codes, not [out, in]
            shape = f" ({child.extra_repr()})"
        elif q is not None and ckpt.is_quantized(full) and hasattr(child, "in_features"):
            shape = (
                f" (in={child.in_features}, out={child.out_features}, bits={q['bits']}, "
                f"group={q['group_size']}, {q['method']})"
            )
        elif w is not None and not list(child.children()):
            shape = f" {tuple(w.shape)} {str(w.dtype).replace('torch.', '')}"
        return f"{name}: {type(child).__name__}{shape}"

    def shape_of(module, full) -> tuple:
        """A subtree's labels below it, by names relative to it: alike layers give the same."""
        return tuple((label(n, c, f"{full}.{n}"), shape_of(c, f"{full}.{n}")) for n, c in module.named_children())

    def add(node, module, prefix):
        children = list(module.named_children())
        layers = [(n, c) for n, c in children if n.isdigit()]
        alike = len(layers) > 1 and len({shape_of(c, prefix + n) for n, c in layers}) == 1
        for i, (name, child) in enumerate(children):
            if alike and name.isdigit() and i >= 1:
                more = f"{len(layers) - 1} more {type(child).__name__} layers"
                node.add(f"{name}-{layers[-1][0]}: {more}, each as {layers[0][0]}")
                break
            if name.isdigit() and i >= max_children:
                node.add(f"... {len(children) - max_children} more {type(child).__name__} layers")
                break
            full = f"{prefix}{name}"
            add(node.add(label(name, child, full)), child, full + ".")

    add(root, model, "")
    return root
