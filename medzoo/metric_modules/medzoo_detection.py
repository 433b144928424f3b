"""Boxes parsed from free text: parse rate, mean IoU (0 when unparseable) and accuracy at IoU >= 0.5."""

import datasets
import evaluate

from medzoo import metrics


class MedzooDetection(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions, references: strings holding [x1, y1, x2, y2]",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return metrics.summarize_detection(predictions, references)
