"""Exact match (normalised), SQuAD token F1 and ROUGE-L F-measure, as means over examples."""

import datasets
import evaluate

from medzoo import metrics


class MedzooText(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions, references: lists of strings",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        n = len(predictions)
        if n == 0:
            return {"n": 0, "exact_match": None, "token_f1": None, "rouge_l": None}
        return {
            "n": n,
            "exact_match": sum(map(metrics.exact_match, predictions, references)) / n,
            "token_f1": sum(map(metrics.token_f1, predictions, references)) / n,
            "rouge_l": sum(map(metrics.rouge_l, predictions, references)) / n,
        }
