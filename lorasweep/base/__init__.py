"""The base: the embedded stand-in (corpus, tokenizer, pretraining) or the hub model, the prompts, and the record of which was used."""
