"""Which annotations look wrong, with models: the out-of-fold probabilities' disagreement with
each (case, label) (`models.py`, DG805). The data-alone half is a check (checks/label_audit.py,
DG406); both return suspects.Suspect.
A suspect is a question for a person, never a verdict: nothing here changes a label."""
