"""Numbers parsed from free text vs reference numbers: parse rate, MAE, MRE and the share with MRE
below 0.1 / 0.2 / 0.3 over ALL values (failed parses count as failures), plus parsed-only figures."""

import datasets
import evaluate

from medzoo import metrics


class MedzooMeasurement(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions, references: strings; n_values: numbers per answer (2 for lesion axes)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, n_values=1):
        return metrics.summarize_measurements(predictions, references, n_values=n_values)
