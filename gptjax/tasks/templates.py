"""Prompt templates: one plain prompt per task (fine-tuning) and several natural-language
instructions per task in the FLAN style (instruction tuning).  The wording is our own.

Templates are ``str.format`` strings over a record's fields and ``{options}`` (the label
words as a bulleted list).  A prompt never ends with a space: targets start with one.
"""

from __future__ import annotations

FINETUNE: dict[str, tuple[str, ...]] = {
    "sst2": ("Sentence: {sentence}\nSentiment:",),
    "rte": ("Premise: {premise}\nHypothesis: {hypothesis}\nEntailment:",),
    "boolq": ("Passage: {passage}\nQuestion: {question}?\nAnswer:",),
    "webnlg": ("Triples: {triples}\nText:",),
    "wmt16_de_en": ("German: {de}\nEnglish:",),
}

INSTRUCTION: dict[str, tuple[str, ...]] = {
    "sst2": (
        'Review: "{sentence}"\nIs this movie review positive or negative?\nOPTIONS:\n{options}\n'
        "Answer:",
        "{sentence}\n\nHow would you describe the sentiment of the sentence above?\n"
        "OPTIONS:\n{options}\nAnswer:",
        "Decide whether the following movie review expresses a positive or a negative "
        "opinion.\n\nReview: {sentence}\nOpinion:",
        "Here is a snippet from a film critique: {sentence}\nDid the critic like the film? "
        "Reply positive or negative.\nReply:",
        "Classify the sentiment of this text as positive or negative.\nText: {sentence}\n"
        "Sentiment:",
    ),
    "rte": (
        '{premise}\n\nBased on the paragraph above, can we conclude that "{hypothesis}"?\n'
        "OPTIONS:\n{options}\nAnswer:",
        "Read the text and decide whether the statement follows from it.\nText: {premise}\n"
        "Statement: {hypothesis}\nDoes the statement follow? Answer yes or no.\nAnswer:",
        "Premise: {premise}\nHypothesis: {hypothesis}\nIf the premise is true, must the "
        "hypothesis be true as well?\nOPTIONS:\n{options}\nAnswer:",
        'Suppose that "{premise}" Is it then guaranteed that "{hypothesis}"? Yes or no?\nAnswer:',
        'Passage: {premise}\n\nQuestion: Is the claim "{hypothesis}" supported by the '
        "passage?\nReply:",
    ),
    "boolq": (
        "{passage}\n\nAfter reading the passage above, answer the question: {question}?\n"
        "OPTIONS:\n{options}\nAnswer:",
        "Article: {title}\n{passage}\n\nQuestion: {question}? Answer yes or no.\nAnswer:",
        "Read the passage and reply with yes or no.\nPassage: {passage}\nQuestion: "
        "{question}?\nReply:",
        "Using only the text below, tell me: {question}?\n\nText: {passage}\nAnswer:",
        "Question: {question}?\nContext: {passage}\nThe answer, yes or no, is:",
    ),
    "webnlg": (
        "Write a sentence that expresses all of the following facts.\n{_triple_lines}\nSentence:",
        "Facts: {triples}\nTurn these facts into fluent English text.\nText:",
        "Here is some structured data:\n{_triple_lines}\nDescribe it in natural language.\n"
        "Description:",
        "Data: {triples}\n\nWhat is a sentence that describes this data?\nAnswer:",
        "Verbalise the knowledge-graph triples below in one or two sentences.\n"
        "{_triple_lines}\nOutput:",
    ),
    "wmt16_de_en": (
        "Translate the following sentence from German into English.\n{de}\nEnglish:",
        "German: {de}\nWhat is this in English?\nEnglish:",
        "{de}\n\nTranslate to English:",
        'How would you say "{de}" in English?\nAnswer:',
        "Source (German): {de}\nTarget (English):",
    ),
}
