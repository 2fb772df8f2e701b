"""Tokenizers for spell correction: a pretrained one, or one trained on the corpus.

A spell corrector reads broken words, so a byte-level BPE is the natural choice: no
input is ever out of vocabulary, and a small vocabulary (a few thousand merges) keeps
misspelled words split into pieces the model can repair. The offline default trains
such a tokenizer on the clean corpus in seconds, with BART's special tokens and
post-processing (``<s> ... </s>``), and saves it so that
``AutoTokenizer.from_pretrained`` loads it next to the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# BART's special tokens, in BART's id order (bos=0, pad=1, eos=2, unk=3); <mask> last.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with BART's special tokens on ``texts``.

    ``add_prefix_space`` is on so a word is tokenized the same at the start of a query
    as in its middle; otherwise "beatles" and " beatles" would be different pieces and
    the model would have to learn every word twice.
    """
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bpe.token_to_id("<s>")), ("</s>", bpe.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved by spellfix or a hub id the user named explicitly."""
    return AutoTokenizer.from_pretrained(str(name_or_path))


def decode_clean(tokenizer: PreTrainedTokenizerBase, ids: list[list[int]]) -> list[str]:
    """Decode generated ids to text; byte-level BPE keeps the prefix space, so strip it."""
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
