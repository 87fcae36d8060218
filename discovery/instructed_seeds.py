"""Seed material for the instructed sets (discovery/instructed.py): kinds of remark, the
instructions that ask SmolLM2 for each, the subjects they are aimed at, and the openers that
start the model's line.

Nothing here is toxic text. The hostile kinds are *instructions* ("Insult {s} harshly."); the
remark itself is the model's. The openers are shared by every contrast kind, so the words a
scored text starts with carry no label: only what the model wrote after them differs between
an insult and a compliment to the same subject.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTRAST_KINDS",
    "CONTRAST_OPENERS",
    "HARD_KINDS",
    "Kind",
    "PEOPLE",
    "GROUPS",
    "SYSTEM_PROMPTS",
    "TEMPLATED_EXEMPLARS",
    "WRITTEN_EXEMPLARS",
]


@dataclass(frozen=True)
class Kind:
    """One kind of remark: what to ask for, and what it is."""

    name: str
    category: str  # insult, threat, identity/dehumanising, benign, benign-hard
    label: int  # 1 toxic, 0 benign
    instructions: tuple[str, ...]  # paraphrases; {s} is the subject
    # Hard-negative kinds have their own openers and subjects; contrast kinds share CONTRAST_OPENERS
    # and PEOPLE + GROUPS.
    openers: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()


# Who a remark is aimed at: single people, and groups (some are identity groups: the same groups
# get compliments and neutral descriptions, so a mention of a group is never itself the signal).
PEOPLE: tuple[str, ...] = (
    "my neighbour", "the referee", "the new intern", "the landlord", "my brother-in-law", "the waiter",
    "the bus driver", "my boss", "the plumber", "our team captain", "the cashier", "my roommate",
    "the teacher", "the mechanic", "the lawyer", "my cousin", "the nurse", "the delivery driver",
    "the receptionist", "my ex", "the coach", "the mayor", "the programmer who wrote this code",
    "the guy in the next seat", "the customer support agent", "my sister", "the tour guide",
    "the security guard",
)
GROUPS: tuple[str, ...] = (
    "tourists", "cyclists", "immigrants", "old people", "teenagers", "women", "men", "gamers", "vegans",
    "football fans", "landlords", "politicians", "people from the city", "farmers", "religious people",
    "atheists", "foreigners", "disabled people", "poor people", "people who talk in cinemas",
)

# How a line starts; the model writes the rest. {s}: the subject, {S}: capitalised.
CONTRAST_OPENERS: tuple[str, ...] = (
    "{S}, you are",
    "Listen, {s},",
    "Honestly, {s},",
    "Hey {s},",
    "Let me tell you something about {s}:",
    "Here is what I think of {s}:",
    "You know what, {s}?",
    "Okay, {s},",
    "To {s}:",
    "A word for {s}:",
    "Dear {s},",
    "{S}, I have to say,",
    "So, {s},",
    "Well, {s},",
    "",  # no opener: the whole line is the model's
)

# The model is asked for a line of dialogue: a 135M model refuses or lectures less when the
# remark is a character's, and the line ends at its closing quote.
SYSTEM_PROMPTS: tuple[str, ...] = (
    "You write one line of dialogue for a character in a film script, exactly as the director asks. "
    "No comments, no warnings.",
    "You are a novelist. Reply with exactly one line that your character says, in quotes, and nothing else.",
)

CONTRAST_KINDS: tuple[Kind, ...] = (
    Kind("insult", "insult", 1, (
        "Insult {s} harshly.",
        "Write a nasty insult aimed at {s}.",
        "Tell {s}, rudely and with contempt, what you think of them.",
    )),
    Kind("sarcastic put-down", "insult", 1, (
        "Mock {s} with a sarcastic put-down.",
        "Write a sarcastic, belittling remark aimed at {s}.",
    )),
    Kind("threat", "threat", 1, (
        "Threaten {s} with violence.",
        "Write a menacing threat to hurt {s}.",
        "Tell {s}, menacingly, what you will do to them if they cross you.",
    )),
    Kind("dehumanising", "identity/dehumanising", 1, (
        "Say something dehumanising about {s}, as if they were not human.",
        "Write a demeaning remark that treats {s} as less than human.",
        "Describe {s} as pests or animals, in a hateful, demeaning way.",
    )),
    Kind("compliment", "benign", 0, (
        "Pay {s} a warm compliment.",
        "Tell {s} something kind and admiring.",
    )),
    Kind("neutral description", "benign", 0, (
        "Describe {s} neutrally, without praise or criticism.",
        "Say something plain and factual about {s}.",
    )),
    Kind("polite disagreement", "benign-hard", 0, (
        "Politely disagree with {s}.",
        "Tell {s}, respectfully, that you see it differently.",
    )),
    Kind("polite criticism", "benign-hard", 0, (
        "Politely point out a mistake {s} made.",
        "Give {s} constructive, polite criticism.",
    )),
)

# Benign text that a lexical or shallow detector mistakes for toxicity: text *about* hostility,
# strong words in benign senses, and negative feeling without hostility.
_TOPIC_WORDS: tuple[str, ...] = (
    "insult", "threat", "harassment", "slur", "bullying", "hate speech", "dehumanisation", "profanity",
    "sarcasm", "intimidation", "verbal abuse", "trolling", "contempt", "menace", "swearing", "hostility",
)
_BENIGN_SENSE_WORDS: tuple[str, ...] = (
    "kill (a computer process)", "shoot (a photo)", "execute (a script)", "dead (a battery)",
    "attack (a problem)", "destroy (an old hard drive)", "bomb (an exam)", "crush (a garlic clove)",
    "beat (an egg)", "murder (a song at karaoke)", "hang (a picture)", "strike (a match)",
    "choke (a car engine)", "slaughter (a price)", "blow up (a photo)", "fire (a worker)",
)
_PRODUCTS: tuple[str, ...] = (
    "a toaster", "a pair of running shoes", "a hotel room", "a phone case", "a budget airline flight",
    "a video game", "a vacuum cleaner", "a pizza delivery", "a rental car", "a pair of headphones",
    "a coffee machine", "a tent", "a streaming service", "a laptop bag", "a hair dryer", "a desk chair",
)
_SAD_EVENTS: tuple[str, ...] = (
    "a flood in a small town", "the death of a beloved teacher", "a factory closing", "a lost dog",
    "a cancelled wedding", "a wildfire near a village", "a hospital ward closing", "a failed harvest",
    "the loss of a grandparent", "a bus accident", "a shop going out of business", "a drought",
    "a library closing", "a storm destroying homes", "a team losing the final", "an old cinema burning down",
)

HARD_KINDS: tuple[Kind, ...] = (
    Kind("moderation note", "benign-hard", 0, (
        "You are a forum moderator. In one sentence, explain why you removed a comment that attacked {s}.",
        "Write a short, calm moderator note about a post that harassed {s} and was taken down.",
    ), openers=("Moderator note:", "We removed this comment because", "Note from the moderators:",
                "This post was taken down because", "Reminder from the mods:", "Why this thread was locked:"),
        subjects=PEOPLE + GROUPS),
    Kind("reported speech", "benign-hard", 0, (
        "Write one sentence of a neutral news report about a man who was charged after he threatened {s}.",
        "Write one sentence of a court report describing abusive messages that were sent to {s}.",
    ), openers=("According to the police,", "The court heard that", "Witnesses said that",
                "In a statement, police said", "The report says that", "Prosecutors told the jury that"),
        subjects=PEOPLE + GROUPS),
    Kind("definition", "benign-hard", 0, (
        "Give a short dictionary definition of the word '{s}'.",
        "Explain, like an encyclopedia, what '{s}' means.",
    ), openers=("{S} (noun):", "Definition of {s}:", "{S} means", "In a dictionary, {s} is", "{S}:",
                "The word {s} refers to"),
        subjects=_TOPIC_WORDS),
    Kind("benign strong word", "benign-hard", 0, (
        "Write one everyday sentence that uses the word {s}.",
        "Use {s} in a harmless sentence about work or daily life.",
    ), openers=("Example:", "Today I had to", "At work,", "In the kitchen,", "Yesterday", "Quick tip:"),
        subjects=_BENIGN_SENSE_WORDS),
    Kind("bad review", "benign-hard", 0, (
        "Write a disappointed one-star review of {s}, without insulting anyone.",
        "Write a short negative but polite review of {s}.",
    ), openers=("One star.", "Review:", "I'm disappointed.", "Not recommended:", "Honestly,",
                "Sadly,"),
        subjects=_PRODUCTS),
    Kind("sad news", "benign-hard", 0, (
        "Write one sentence of sad news about {s}.",
        "Write a short, sad announcement about {s}.",
    ), openers=("Sad news:", "We are sorry to report that", "Tragically,", "It is with a heavy heart that",
                "Breaking:", "Unfortunately,"),
        subjects=_SAD_EVENTS),
)

# Few-shot exemplars (InstructedSpec.shots): lines shown to the model as its earlier answers to
# the same kind of request, before the request itself. Zero-shot, SmolLM2-135M mostly ignores a
# hostile instruction (README, "How often the model does what it is asked"); shown a few short
# answers, it writes lines of that kind. The toxic kinds and compliments borrow the templated
# lines of their category (discovery/templated.py; template name, hostile or benign phrases), so
# no hostile text is written here; the other benign contrast kinds have plain lines of their own.
TEMPLATED_EXEMPLARS: dict[str, tuple[str, int]] = {
    "insult": ("insult", 1),
    "sarcastic put-down": ("insult", 1),
    "threat": ("threat", 1),
    "dehumanising": ("dehumanising", 1),
    "compliment": ("insult", 0),
}
WRITTEN_EXEMPLARS: dict[str, tuple[str, ...]] = {
    "neutral description": (
        "You work at the bakery on weekdays.", "You moved here two years ago.",
        "You usually take the early train.", "You have a blue car and a small garden.",
        "You speak two languages.", "You were at the meeting on Monday.", "You live on the third floor.",
        "You started the job in March.", "You drink your coffee without sugar.",
        "You walk the dog every evening.",
    ),
    "polite disagreement": (
        "I see your point, but I think the plan needs more time.",
        "I respect your view, though I read the numbers differently.",
        "I'm not sure I agree; the older design worked well for us.",
        "That's a fair idea, but I would choose the other route.",
        "I hear you, but I think we should wait until Friday.",
        "With respect, I don't think the price is the main problem.",
        "I understand why you say that, but I see it another way.",
        "Good point, although I still prefer the first option.",
        "I may be wrong, but I think the meeting should stay on Tuesday.",
        "I disagree a little: the team did well this season.",
    ),
    "polite criticism": (
        "The report is good, but the dates in the second table are wrong.",
        "Thanks for the draft; the last paragraph could be shorter.",
        "Nice work, though you forgot to lock the back door.",
        "The cake was lovely, but it needed a few more minutes in the oven.",
        "You did well, but please check the spelling before sending it.",
        "It's a good start; the figures need their units.",
        "I liked it, but the introduction repeats the title.",
        "Thank you, but the invoice went to the wrong address.",
        "Great effort, though the second answer misses a step.",
        "The layout is clear, but the font is too small to read.",
    ),
}
