"""A WordPiece tokenizer in the SimpleStories style, trained on a story corpus.

Lowercase, punctuation split off as tokens of its own (so '.', '?' and '!' are
single tokens the sentence rewards can look for), ``[UNK]`` = 0 and ``[EOS]`` = 1,
no BOS and no PAD: padding uses EOS. Encoding a text adds no special token.
"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import LorasweepError

UNK, EOS = "[UNK]", "[EOS]"
DELIMITERS = (".", "?", "!")


def train_wordpiece(stories, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    # Splits on whitespace and on every punctuation character.
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Special tokens come first, in this order, so their ids are 0 and 1.
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[UNK, EOS], show_progress=False
    )
    tokenizer.train_from_iterator(stories, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=UNK, eos_token=EOS, pad_token=EOS
    )


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or "(unnamed)"


def delimiter_ids(tokenizer) -> list[int]:
    """Ids of the sentence delimiters '.', '?', '!', in that order; each must be a token.

    The sentence rewards split completions at these ids (docs/design.md §2). A
    vocabulary without one of them would silently score sentences another way, so a
    missing delimiter is an error naming it.
    """
    vocab = tokenizer.get_vocab()
    missing = [d for d in DELIMITERS if d not in vocab]
    if missing:
        raise LorasweepError(
            f"tokenizer {_name(tokenizer)} has no token for {' '.join(repr(d) for d in missing)} of the "
            f"sentence delimiters {' '.join(repr(d) for d in DELIMITERS)}: the sentence rewards split "
            "completions at each of them, so each must be a token of its own"
        )
    return [vocab[d] for d in DELIMITERS]


def eos_id(tokenizer) -> int:
    """The end-of-sequence id, which stops sampling and pads; an error naming the tokenizer if it has none."""
    if tokenizer.eos_token_id is None:
        raise LorasweepError(
            f"tokenizer {_name(tokenizer)} has no end-of-sequence token (eos_token): sampling stops "
            "at it and pads with it, so the base model's tokenizer must define one"
        )
    return tokenizer.eos_token_id
