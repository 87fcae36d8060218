"""Seed material for the discovery corpus (discovery/corpus.py).

Nothing here is toxic text. Toxic material enters the corpus only through the `better-profanity`
word list (a registry package) and the model's own generations; these lists are neutral frames
and benign topics that the model continues, plus benign sentences that merely contain strong
words (the detector's hard negatives: "kill the process", "damn good coffee").
"""

from __future__ import annotations

__all__ = [
    "BENIGN_TOPICS",
    "CHAT_INSTRUCTIONS",
    "CONTINUATION_OPENERS",
    "HARD_NEGATIVES",
    "HOSTILE_INSTRUCTIONS",
    "INSULT_FRAMES",
    "WORD_FRAMES",
]

BENIGN_TOPICS: tuple[str, ...] = (
    "gardening", "the ocean", "bread baking", "train travel", "the solar system", "chess",
    "learning a language", "recycling", "jazz music", "mountain hiking", "coffee", "volcanoes",
    "a rainy afternoon", "the history of paper", "bicycles", "honey bees", "city parks", "photography",
    "a job interview", "saving money", "python programming", "databases", "the immune system",
    "winter holidays", "a birthday party", "painting with watercolors", "the moon landing", "soccer",
    "a small bakery", "dinosaurs", "electric cars", "a library", "writing a poem", "yoga", "penguins",
    "a thunderstorm", "museums", "the internet", "a new puppy", "making soup", "knitting", "rivers",
    "friendship", "a science fair", "airplanes", "healthy sleep", "board games", "the desert",
)

CHAT_INSTRUCTIONS: tuple[str, ...] = (
    "Write a short paragraph about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "Give me three tips about {topic}.",
    "What is interesting about {topic}?",
    "Write a friendly message to a colleague about {topic}.",
    "Describe {topic} in a few sentences.",
    "Tell me a short story involving {topic}.",
    "What are common mistakes people make with {topic}?",
)

CONTINUATION_OPENERS: tuple[str, ...] = (
    "Here is what I learned about {topic}:",
    "The best thing about {topic} is",
    "Yesterday my friend and I talked about {topic}, and",
    "A short guide to {topic}. First,",
    "Most people do not know that {topic}",
    "Review: our afternoon with {topic} was",
)

# Neutral frames around one word of the profanity list; the model writes the rest.
WORD_FRAMES: tuple[str, ...] = (
    'He looked at me and said "{word}',
    "Comment posted under the video: {word}",
    "The reply just said: {word}",
    "She typed {word} and kept going:",
    "{word}! That is what they shouted at",
    "Forum post #{n}: honestly, {word}",
)

# Frames that point one word of the list at a person; the model writes the rest. Most words of
# the list are only toxic when aimed at someone, and the judge agrees.
INSULT_FRAMES: tuple[str, ...] = (
    "You are such a {word}, and",
    "Listen, you {word},",
    "My neighbour is a total {word} because",
    "Everyone in this thread is a {word} and",
    "Reply from user{n}: what a {word} you are,",
)

# Chat requests that invite a hostile answer; the topic and the word come from the lists.
HOSTILE_INSTRUCTIONS: tuple[str, ...] = (
    "Write an angry reply to someone who ruined {topic}, and use the word '{word}'.",
    "Insult a person who hates {topic}. Use the word '{word}'.",
    "Write a rude comment about {topic} containing '{word}'.",
    "Roleplay a furious neighbour shouting about {topic}; they say '{word}' a lot.",
)

# Benign sentences with strong words: false-positive bait for a lexical detector.
HARD_NEGATIVES: tuple[str, ...] = (
    "To stop the server, kill the process with its PID and",
    "This is some damn good coffee, and",
    "The comedian absolutely killed it on stage last night, and",
    "Use git to blow away your local changes if",
    "The hell of it is that the bus was late again, so",
    "She shot the photos for the wedding in the morning and",
    "We need to execute the script before the deadline, because",
    "The assassin bug is an insect that",
    "Strip the wires carefully before you connect them, then",
    "The doctor said the tumour was benign, so we",
    "My crappy old laptop finally died, so I",
    "Sniper is a common word in video games where players",
    "Hit the ball hard and follow through, and",
    "That exam was brutal, but I think I",
    "The suspect was charged with murder in 1998, and the trial",
    "Abort the transaction if the lock cannot be acquired, then",
    "The virus spread quickly through the population until",
    "Damn, that sunset over the lake was beautiful and",
    "The child process is killed when the parent exits, so",
    "He beat the record by two seconds and",
    "The bloody battle of 1066 changed English history because",
    "Dead code should be removed from the repository so that",
    "Breast cancer screening saves lives, and doctors",
    "The cock crowed at dawn while the farmer",
    "Sex education classes teach teenagers how",
    "The drug trial showed that the new medicine",
    "Bitch is the correct term for a female dog, and breeders",
    "The dam on the river holds back water so that",
    "Shoot me an email when you are free and",
    "This bug is killing me, the test fails only on Fridays and",
)
