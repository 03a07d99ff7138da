"""Which annotations look wrong: a ranked list of suspect (case, label) pairs, from the data
alone (`data.py`, DG406) and from the models' out-of-fold probabilities (`models.py`, DG805).
A suspect is a question for a person, never a verdict: nothing here changes a label."""
