"""A test reward that decides a run's fate by its batch size: 1 for each completion of an 8-completion batch."""


def pays_full_batches(prompts, completions):
    return [1.0 if len(completions) == 8 else 0.0] * len(completions)
