"""A seeded generator of simple children's stories.

It is the offline stand-in for the SimpleStories dataset: closed word lists and
sentence templates, so that a tokenizer trained on it keeps every word whole and
a sentence's length in tokens is its number of words plus punctuation marks.
The templates are chosen so that sentence lengths spread from about 3 to 16
tokens (not counting the closing delimiter) with a mean near 8-9, and sentences
of exactly 10 tokens are common: the sentence-length reward of the RL task then
has something to find in the base model.

Template syntax: ``{slot}`` is filled from the story's cast or a word list,
``[...]`` is an optional part kept with probability one half.
"""

import random
import re
from pathlib import Path

from ..atomic import write_text

GIRLS = ["Mia", "Lily", "Zoe", "Anna", "Lucy", "Ella", "Rosa", "Nina", "Ivy", "Maya",
         "Sara", "Ruby", "Luna", "Emma", "Nora", "Tara"]
BOYS = ["Leo", "Sam", "Tom", "Ben", "Max", "Jack", "Finn", "Noah", "Omar", "Kai",
        "Eli", "Owen", "Theo", "Hugo", "Raj", "Tim"]
ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "bear", "duck", "frog", "mouse", "owl",
           "turtle", "pony", "lamb", "squirrel", "puppy", "kitten", "goat", "fish"]
OBJECTS = ["ball", "kite", "hat", "book", "box", "drum", "cup", "key", "shell", "stone",
           "boat", "bell", "map", "flower", "leaf", "coin", "blanket", "basket", "toy", "cake"]
PLACES = ["park", "forest", "garden", "river", "beach", "hill", "farm", "town", "school",
          "lake", "meadow", "village", "cave", "market", "field", "pond"]
# Adjectives for creatures, for things and for places, so that no boat is brave.
CREATURE_ADJECTIVES = ["little", "big", "happy", "sad", "brave", "kind", "shy", "funny",
                       "sleepy", "clever", "tiny", "gentle", "curious", "silly"]
THING_ADJECTIVES = ["big", "small", "red", "blue", "green", "yellow", "soft", "shiny", "old",
                    "new", "bright", "tiny", "pretty", "heavy"]
PLACE_ADJECTIVES = ["big", "quiet", "green", "sunny", "old", "small", "busy", "peaceful"]
VERBS = ["play", "run", "jump", "sing", "dance", "swim", "read", "draw", "climb", "hide",
         "explore", "laugh", "build", "paint"]
FEELINGS = ["happy", "proud", "tired", "excited", "scared", "calm", "glad", "surprised"]
LESSONS = [
    "friends are important",
    "sharing makes everyone happy",
    "being kind is the best gift",
    "it is good to ask for help",
    "trying again is brave",
    "every day can be an adventure",
    "small things can matter a lot",
]

# One opening, a few middle sentences, one ending: 3 to 8 sentences a story.
OPENINGS = [
    "Once upon a time, there was a [{cadj} ]{animal} named {name}.",
    "{name} was a [{cadj} ]{animal} who lived near the {place}.",
    "{name} had a [{cadj} ]{animal}.",
    "One day, {name} went to the [{padj} ]{place}.",
    "It was a [very ]sunny day in the [{padj} ]{place}.",
    "{name} lived in a [{tadj} ]house by the {place}.",
    "There once was a {cadj} {animal} who loved to {verb}.",
]
MIDDLES = [
    "{sub} liked to play with {pos} [{tadj} ]{object}.",
    "The {animal} was very {cadj}.",
    "{name} and {friend} walked to the [{padj} ]{place} together.",
    "{name} found a [{tadj} ]{object} under a {tadj2} {object2}.",
    "\"Let us go to the {place},\" said {name}.",
    "{name} wanted to {verb} with the {animal} in the {place}.",
    "When the sun went down, {name} said goodbye to the [{cadj} ]{animal} and went home.",
    "Where is my [{tadj} ]{object}?",
    "Can you help me find my {object}?",
    "Do you want to {verb} with me?",
    "The {animal} jumped over the [{tadj} ]{object} and ran away.",
    "{sub} gave {pos} {object} to the [{cadj} ]{animal}.",
    "{name} saw a {animal} that could {verb} very well.",
    "Suddenly, the {animal} heard a loud noise[ from the {place}].",
    "{sub} felt {feeling}.",
    "The {object} was [very ]{tadj}.",
    "\"I can {verb} too,\" said {friend}.",
    "They played with the {object} all day[ long].",
    "{sub} looked at the {tadj} {object} and smiled.",
    "\"What a {tadj} {object},\" said {friend}.",
    "Wow, the {animal} can {verb}!",
    "{name} asked the {animal} to {verb} with {obj}.",
    "Then {sub} went home to {verb}.",
    "The {animal} and {name} became best friends.",
    "The {cadj} {animal} wanted to find a {tadj} {object} in the {place}.",
    "{name} and the {animal} played a fun game in the {place}.",
    "The {animal} liked to {verb} in the {place} every morning.",
    "{name} told {friend} about the {tadj} {object} at the {place}.",
    "They laughed and ran around the {place} until it got dark.",
    "{sub} did not know what to do with the {object}.",
    "It started to rain, so {name} and the {animal} ran inside.",
    "The {object} rolled down the hill and into the {place}.",
    "Is this your {object}?",
    "Why is the {animal} so {cadj}?",
]
ENDINGS = [
    "After a long day, {name} and the {animal} went home and fell asleep.",
    "Everyone in the {place} was {cadj} and {feeling}.",
    "{name} learned that {lesson}.",
    "From that day on, {name} was never {feeling2} again.",
    "{sub} could not wait to come back tomorrow!",
    "{name} went to bed with a big smile.",
    "It was the best day ever.",
    "{name} and {friend} stayed friends for a very long time.",
]

# Slots drawn anew each time a template asks for them (the cast's slots are fixed).
FRESH_WORDS = {
    "cadj": CREATURE_ADJECTIVES, "tadj": THING_ADJECTIVES, "tadj2": THING_ADJECTIVES,
    "padj": PLACE_ADJECTIVES, "object2": OBJECTS, "verb": VERBS,
    "feeling": FEELINGS, "feeling2": ["sad", "lonely", "scared", "bored"],
    "lesson": LESSONS,
}
OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
SLOT = re.compile(r"\{(\w+)\}")


def _cast(rng: random.Random) -> dict:
    """The characters and setting one story keeps from start to end."""
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    friend = rng.choice([n for n in GIRLS + BOYS if n != name])
    return {
        "name": name,
        "friend": friend,
        "sub": "she" if girl else "he",
        "obj": "her" if girl else "him",
        "pos": "her" if girl else "his",
        "animal": rng.choice(ANIMALS),
        "place": rng.choice(PLACES),
        "object": rng.choice(OBJECTS),
    }


def _fresh_word(slot: str, rng: random.Random) -> str:
    if slot not in FRESH_WORDS:
        raise KeyError(f"template slot {{{slot}}} has no word list")
    return rng.choice(FRESH_WORDS[slot])


def _sentence(template: str, cast: dict, rng: random.Random) -> str:
    text = OPTIONAL.sub(lambda m: m.group(1) if rng.random() < 0.5 else "", template)
    text = SLOT.sub(lambda m: cast.get(m.group(1)) or _fresh_word(m.group(1), rng), text)
    # Capitalise the first letter, also when the sentence opens with a quote.
    for i, char in enumerate(text):
        if char.isalpha():
            return text[:i] + char.upper() + text[i + 1:]
    return text


def generate_story(rng: random.Random) -> str:
    cast = _cast(rng)
    middles = rng.sample(MIDDLES, rng.randint(1, 6))
    templates = [rng.choice(OPENINGS), *middles, rng.choice(ENDINGS)]
    return " ".join(_sentence(t, cast, rng) for t in templates)


def generate_stories(n: int, seed: int) -> list[str]:
    """``n`` stories, the same ones for the same seed."""
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


def write_corpus(path, stories) -> Path:
    """One story per line; stories never contain a newline."""
    return write_text(path, "".join(story.replace("\n", " ") + "\n" for story in stories))


def read_corpus(path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]
