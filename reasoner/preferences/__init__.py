"""Preferences: the data formats (`formats`: TRL pairs, rankings, comparisons), ratings from
comparisons (`ratings`: Bradley–Terry with confidence intervals, Elo), the synthetic annotator
(`annotator`) and sampling a policy's completions for it to rank (`sample`), and the held-out
evaluation of a reward model (`evaluation`)."""

from reasoner.preferences.annotator import SyntheticAnnotator, bayes_accuracy_of_records
from reasoner.preferences.formats import (
    FORMATS,
    Comparison,
    PreferenceDataError,
    PreferenceRecord,
    read_preferences,
)

__all__ = ["FORMATS", "Comparison", "PreferenceDataError", "PreferenceRecord",
           "SyntheticAnnotator", "bayes_accuracy_of_records", "read_preferences"]
