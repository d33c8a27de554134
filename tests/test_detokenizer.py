"""engines/template.Detokenizer on a SentencePiece-style byte-fallback tokenizer (Yi's and Llama's kind: a run of byte
tokens decodes to U+FFFD, one per byte, while any of its characters is incomplete), built here with `tokenizers`:
streamed text equals the whole decode, a reply cut at any token ends before an incomplete character and its
continuation (the cut reply's ids as context) completes it, and a context whose window starts inside a character
adds nothing of it."""

from __future__ import annotations

import pytest

tokenizers = pytest.importorskip("tokenizers")

from yi_cli.engines.template import Detokenizer  # noqa: E402

WORDS = ["▁", "▁end", "▁So", "▁hi", "a", "!", "▁東", "京"]


class ByteFallback:
    """decode(ids, skip_special_tokens) as the Detokenizer calls it, on a byte-fallback BPE of a few words."""

    def __init__(self):
        from tokenizers import Tokenizer, decoders, models, normalizers

        self.vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
        for b in range(256):
            self.vocab[f"<0x{b:02X}>"] = len(self.vocab)
        for w in WORDS:
            self.vocab[w] = len(self.vocab)
        t = Tokenizer(models.BPE(vocab=self.vocab, merges=[], byte_fallback=True, unk_token="<unk>", fuse_unk=True))
        t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        t.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        self.t = t

    def decode(self, ids, skip_special_tokens=True):
        return self.t.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def ids(self, *parts) -> list[int]:
        """Words of WORDS as themselves, any other text as its UTF-8 byte tokens."""
        out = []
        for p in parts:
            out += [self.vocab[p]] if p in self.vocab else [self.vocab[f"<0x{b:02X}>"] for b in p.encode()]
        return out


TEXTS = [
    ("▁So", "▁", "😀😀", "▁end"),
    ("▁So", "▁", "👍🏽", "▁end"),
    ("▁So", "▁", "🙂🙂🙂", "▁end"),
    ("▁東", "🙂⭐🙂", "京", "!"),
]


@pytest.mark.parametrize("parts", TEXTS)
def test_a_cut_at_any_token_then_its_continuation_is_the_whole_text(parts):
    tok = ByteFallback()
    ids = tok.ids(*parts)
    whole = tok.decode(ids)
    assert "\ufffd" not in whole
    for k in range(1, len(ids)):
        a = Detokenizer(tok)
        first = "".join(a.add(i) for i in ids[:k]) + a.flush()
        b = Detokenizer(tok, context=ids[:k])
        rest = "".join(b.add(i) for i in ids[k:]) + b.flush()
        assert (first, first + rest) == (first.rstrip("\ufffd"), whole), k


def test_long_runs_of_byte_tokens_stream_as_the_whole_decode():
    """The decoding window slides past characters of several byte tokens: it starts on a boundary every time."""
    tok = ByteFallback()
    ids = tok.ids("▁So", "丂" * 12, "a", "!", "▁", "😀" * 5 + "丂丂😀丂", "▁end", "▁", "🙂⭐" * 6, "a", "!")
    d = Detokenizer(tok)
    assert "".join(d.add(i) for i in ids) + d.flush() == tok.decode(ids)


def test_a_complete_context_whose_window_starts_inside_a_character_adds_nothing_of_it():
    tok = ByteFallback()
    context = tok.ids("▁So", "▁", "🙂⭐🙂")  # the last CONTEXT ids begin inside the first 🙂
    d = Detokenizer(tok, context=context)
    assert "".join(d.add(i) for i in tok.ids("▁end")) + d.flush() == " end"
