"""The Yi family: short aliases for its hub repos and the facts of each (shape, context, template, stop tokens).

Facts are from the released config.json values (as recorded by Xinference), the Yi READMEs and issue trackers.
Where those give no number, the value is the one the released config.json carries, marked `chosen` below:
Yi-1.5's and Yi-Coder's shapes, the 200K models' max_position_embeddings (200000: the config's own field;
Xinference advertises 262144), Yi-Coder's rope_theta. No torch here: `yi-chat models` and the loader's alias lookup
import this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# Yi-1.0 chat and Yi-1.5 chat ship this template: the system message is printed raw, not wrapped in
# <|im_start|>system (01-ai/Yi-1.5#23); 01.AI's own fix for LlamaFactory (PR #3925) wraps it in ChatML.
YI_SHIPPED_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% endif %}"
    "{% if system_message is defined %}{{ system_message }}{% endif %}"
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
)
# Yi-Coder chat: ChatML with the system message wrapped when given.
YI_CODER_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% endif %}"
    "{% if system_message is defined %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
)
TEMPLATES = {"yi": YI_SHIPPED_TEMPLATE, "yi-coder": YI_CODER_TEMPLATE}


@dataclass(frozen=True)
class Member:
    repo: str  # hub id, e.g. 01-ai/Yi-6B-Chat-4bits
    chat: bool  # False: a base model, run as plain completion
    fmt: str  # awq | gptq | bf16
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    context: int  # max_position_embeddings
    rope_theta: float
    template: str | None  # key of TEMPLATES; None for base models (no chat template shipped)
    eos: str  # tokenizer_config eos_token
    gen_eos: int  # generation_config eos_token_id
    rms_eps: float = 1e-5
    bits: int = 16
    chosen: str = ""  # facts not in the research, taken from the released config

    @property
    def alias(self) -> str:
        return self.repo.split("/", 1)[1].lower()

    def to_dict(self) -> dict:
        return {"alias": self.alias, **asdict(self)}


_6B = dict(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=4)
_9B = dict(layers=48, hidden=4096, intermediate=11008, heads=32, kv_heads=4)
_34B = dict(layers=60, hidden=7168, intermediate=20480, heads=56, kv_heads=8)
_YI = dict(rope_theta=5e6, eos="<|endoftext|>")
_CHAT = dict(chat=True, template="yi", gen_eos=7)
_BASE = dict(chat=False, template=None, gen_eos=2)
# Yi-1.5 chat: tokenizer eos <|im_end|>, config/generation eos 2 (01-ai/Yi-1.5#23); rms_norm_eps 1e-6.
_15 = dict(chat=True, template="yi", rope_theta=5e6, eos="<|im_end|>", gen_eos=2, rms_eps=1e-6, context=4096)
_CODER = dict(
    chat=True,
    template="yi-coder",
    rope_theta=1e7,
    eos="<|endoftext|>",
    gen_eos=2,
    context=131072,
    chosen="shape and rope_theta from the released config (not in the research)",
)


def _m(repo, **kw) -> Member:
    return Member(repo=f"01-ai/{repo}", **kw)


MEMBERS: tuple[Member, ...] = (
    _m("Yi-6B", fmt="bf16", context=4096, **_6B, **_YI, **_BASE),
    _m("Yi-6B-Chat", fmt="bf16", context=4096, **_6B, **_YI, **_CHAT),
    _m("Yi-6B-Chat-4bits", fmt="awq", bits=4, context=4096, **_6B, **_YI, **_CHAT),
    _m("Yi-6B-Chat-8bits", fmt="gptq", bits=8, context=4096, **_6B, **_YI, **_CHAT),
    _m(
        "Yi-6B-200K",
        fmt="bf16",
        context=200000,
        **_6B,
        **_YI,
        **_BASE,
        chosen="context 200000 is the config's max_position_embeddings (Xinference lists 262144)",
    ),
    _m("Yi-9B", fmt="bf16", context=4096, **_9B, **_YI, **_BASE),
    _m("Yi-34B", fmt="bf16", context=4096, **_34B, **_YI, **_BASE),
    _m("Yi-34B-Chat", fmt="bf16", context=4096, **_34B, **_YI, **_CHAT),
    _m("Yi-34B-Chat-4bits", fmt="awq", bits=4, context=4096, **_34B, **_YI, **_CHAT),
    _m("Yi-34B-Chat-8bits", fmt="gptq", bits=8, context=4096, **_34B, **_YI, **_CHAT),
    _m(
        "Yi-34B-200K",
        fmt="bf16",
        context=200000,
        **_34B,
        **_YI,
        **_BASE,
        chosen="context 200000 is the config's max_position_embeddings",
    ),
    _m("Yi-1.5-6B-Chat", fmt="bf16", **_6B, **_15, chosen="shape = Yi-6B's (not recorded in the research)"),
    _m("Yi-1.5-9B-Chat", fmt="bf16", **_9B, **_15),
    _m("Yi-1.5-34B-Chat", fmt="bf16", **_34B, **_15),
    _m("Yi-1.5-9B-Chat-16K", fmt="bf16", **_9B, **{**_15, "context": 16384}),
    _m("Yi-1.5-34B-Chat-16K", fmt="bf16", **_34B, **{**_15, "context": 16384}),
    _m("Yi-Coder-1.5B-Chat", fmt="bf16", layers=24, hidden=2048, intermediate=5504, heads=16, kv_heads=16, **_CODER),
    _m("Yi-Coder-9B-Chat", fmt="bf16", **_9B, **_CODER),
)
ALIASES: dict[str, Member] = {m.alias: m for m in MEMBERS}
BY_REPO: dict[str, Member] = {m.repo.lower(): m for m in MEMBERS}


def expand(name: str) -> str:
    """A family alias (any case, e.g. yi-6b-chat-4bits) -> its hub id; anything else unchanged."""
    m = ALIASES.get(name.lower())
    return m.repo if m else name


def repo_of(path) -> str | None:
    """The hub id of a path inside the hub cache (.../models--01-ai--Yi-6B/snapshots/<commit>), else None (also for
    models--gpt2, an id without an owner, which yi-chat does not fetch: hub.scan lists it so)."""
    for part in reversed(Path(str(path)).parts):
        if part.startswith("models--") and part.count("--") >= 2:
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


def member_of(path) -> Member | None:
    """The family member a checkpoint directory holds: from a hub-cache path (models--01-ai--Yi-6B/snapshots/...)
    or from a directory named like the repo (~/models/Yi-6B-Chat-4bits)."""
    repo = repo_of(path)
    if repo is not None:
        return BY_REPO.get(repo.lower())
    return ALIASES.get(Path(str(path)).name.lower())


def is_base(path) -> bool:
    """True for a known Yi base model: it has ChatML tokens in its vocabulary but was never tuned to chat."""
    m = member_of(path)
    return m is not None and not m.chat


def is_shipped_yi_template(template: str) -> bool:
    """Yi's shipped template, which prints the system prompt raw; ChatML wraps it (what 01.AI's fix does)."""
    return template.strip() == YI_SHIPPED_TEMPLATE
