"""A WordPiece tokenizer in the SimpleStories style, trained on a story corpus.

Lowercase, punctuation split off as tokens of its own (so '.', '?' and '!' are
single tokens the sentence rewards can look for), ``[UNK]`` = 0 and ``[EOS]`` = 1,
no BOS and no PAD: padding uses EOS. Encoding a text adds no special token.
"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .errors import LorasweepError

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


def delimiter_ids(tokenizer) -> list[int]:
    """Ids of the sentence delimiters '.', '?', '!' that the vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[d] for d in DELIMITERS if d in vocab]
    if not ids:
        raise LorasweepError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or '(unnamed)'} has none of "
            f"the sentence delimiters {' '.join(DELIMITERS)} as a token"
        )
    return ids
