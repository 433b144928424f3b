"""`medzoo.train(recipe)`: train a recipe's LoRA/QLoRA adapter, stage by stage.

Output folder (the recipe's run directory, default runs/<name>):

    adapter/            final peft adapter + processor + chat template (what bench/merge read)
    stages/NN-<name>/   each curriculum stage's adapter (a single-stage recipe has one)
    checkpoints/<stage>/checkpoint-N   Trainer checkpoints, for --resume
    logs/               TensorBoard
    recipe.yaml         the resolved recipe
    manifest.json       base model, data fingerprint, config hash, version, drops, metrics

Speed choices (measured in benchmarks/train_throughput.py): examples are tokenised and their
images processed once and cached on disk, the collator only pads and concatenates, a plain
`Trainer` is used (trl's SFTTrainer computes extra per-step metrics), and tiny models train on
one torch thread (~40x faster per step than two on 2-core machines, measured).
"""

from medzoo.train.data import Stage, TrainContext, choose_threads, prepare_split, stages_of
from medzoo.train.evaluate import quick_eval
from medzoo.train.runner import train
from medzoo.train.trainer import answer_only_loss, trainable_weights_digest, trainer_class, training_args

__all__ = [
    "Stage",
    "TrainContext",
    "trainable_weights_digest",
    "answer_only_loss",
    "choose_threads",
    "prepare_split",
    "quick_eval",
    "stages_of",
    "train",
    "trainer_class",
    "training_args",
]
