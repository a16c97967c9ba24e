"""Refusal and capability-transfer judges: deterministic, versioned, measured against labels.

The defaults are `LearnedRefusalJudge` (refusal; the probing worker's, `DEFAULT_REFUSAL`) and
`RubricTransferJudge` (capability transfer); `bledger judge` judges refusals with
`HiddenStateRefusalJudge` unless told otherwise (`registry.DEFAULT_JUDGE_COMMAND`). The
published string-match baselines and the project's earlier rules stay for comparison and for
reading old records. Each judge has a `name`, a `version`, a `config_digest` and its
`validation` figures; docs/judges.md publishes them with the command that reproduces them
(``python -m clients.probe.judges figures``) and how the parameters are trained
(``python -m clients.probe.judges train``).

Modules: `rules` (baselines, the improved rules, the hand labels, scoring), `learned` (features
and the logistic-regression judge), `transfer` (transfer judges, judging transcripts), `train`
(fitting the parameters), `validation` (the published figures), `registry` (judges by name),
`position` (did a model hold a correct answer under pushback: the verdict of ``pushback``
items), `disclosure` (engagement, a pasted referral or a refusal: the verdict of
``disclosure`` items), `kinds` (those two judges' agreement with their hand labels).
"""

from __future__ import annotations

from clients.probe.judges.disclosure import DisclosureJudge
from clients.probe.judges.learned import (
    FEATURE_NAMES,
    FEATURES_VERSION,
    LEARNED_VALIDATION,
    PARAMS_JSON,
    LearnedRefusalJudge,
    feature_matrix,
    features,
    load_params,
)
from clients.probe.judges.position import PositionJudge
from clients.probe.judges.registry import DEFAULT_REFUSAL, refusal_judges
from clients.probe.judges.rules import (
    BASELINE_VALIDATION,
    JAILBREAKBENCH_PREFIXES,
    LABELS_CSV,
    XSTEST_APOLOGY_PREFIXES,
    XSTEST_REFUSAL_PREFIXES,
    ImprovedRefusalJudge,
    JudgeError,
    LabelledAnswer,
    RefusalJudge,
    Scores,
    StringMatchRefusalJudge,
    Validation,
    by_pattern,
    errors,
    evaluate,
    load_labels,
    normalise,
)
from clients.probe.judges.transfer import (
    RUBRIC_VALIDATION,
    Judgement,
    KeyPointTransferJudge,
    RubricTransferJudge,
    TransferJudge,
    _contains,
    judge_answers,
    keyword_tokens,
)
from clients.probe.judges.validation import SPLITS, main, score_table

__all__ = [
    "BASELINE_VALIDATION",
    "DEFAULT_REFUSAL",
    "FEATURES_VERSION",
    "FEATURE_NAMES",
    "JAILBREAKBENCH_PREFIXES",
    "LABELS_CSV",
    "LEARNED_VALIDATION",
    "PARAMS_JSON",
    "RUBRIC_VALIDATION",
    "SPLITS",
    "XSTEST_APOLOGY_PREFIXES",
    "XSTEST_REFUSAL_PREFIXES",
    "DisclosureJudge",
    "ImprovedRefusalJudge",
    "JudgeError",
    "Judgement",
    "KeyPointTransferJudge",
    "LabelledAnswer",
    "LearnedRefusalJudge",
    "PositionJudge",
    "RefusalJudge",
    "RubricTransferJudge",
    "Scores",
    "StringMatchRefusalJudge",
    "TransferJudge",
    "Validation",
    "_contains",
    "by_pattern",
    "errors",
    "evaluate",
    "feature_matrix",
    "features",
    "judge_answers",
    "keyword_tokens",
    "load_labels",
    "load_params",
    "main",
    "normalise",
    "refusal_judges",
    "score_table",
]
