"""AdvantageNAS recurrent cell search on Penn Treebank (Sato et al., AAAI 2021, sec. 5.3 and App. E).

Model (App. E, after DARTS): word embedding (300) -> recurrent cell -> linear decoder over the 10k
words. The cell: input node x_0 = h + c_in * (tanh(W~h_in(x_e, h)) - h), c_in = sigmoid(W^c_in(x_e, h));
N = 3 intermediate nodes with an edge i -> j for every i < j <= 3 (6 edges), each
y_i = x + c_i * (act(W^h_i x) - x), c_i = sigmoid(W^c_i x), act in {none (zero), tanh, relu,
sigmoid, identity} (sec. 5.3: |J| = 5); the output node averages the intermediate nodes; 300 units
everywhere. Dropout 0.5 on the embeddings and on the cell outputs. Parameters ~ U(-0.1, 0.1) (the
authors' code); 7,450,000 parameters for a cell without 'none' (Table 3 reports 7.44 M).

Search (App. E): 30 epochs on the PTB *training* data for both the weights and theta ("we use the
training data of PTB to optimize both", sec. 5.3): ``space.reward_split='train'`` scores theta's
reward on the next training window from the carried hidden state. Weights: SGD lr 20 cosine-annealed
to 0, batch 256, gradient clipping 0.25, BPTT 35. Theta: Adam lr 3e-3 cosine-annealed to 0,
betas (0.9, 0.999), clipping 1. Zero op: App. B's moving-average rule (gamma 0.05 = decay 0.95,
App. C). Final architecture: argmax (sec. 5.3). One epoch = 929,589 training tokens / 256 streams
= 3,631 rows = 103 full windows of 35, so ``search.steps`` = 30 x 103 = 3,090 steps, each one weight
step and one theta step (the authors' code alternates them over the windows instead: half as many
of each per epoch).

    python -m jaxnas search configs/advantagenas_ptb.py --workdir runs/ptb data.data_dir=/path/to/ptb
    python -m jaxnas retrain runs/ptb                     # 100 epochs, same optimisation (App. E)

Data: ptb.{train,valid,test}.txt(.gz) in ``data.data_dir`` (Mikolov's simple-examples/data; the
default is the copy next to the repository, ``../shared/data/ptb``, on development machines).
The same search with another strategy: ``strategy.name=reinforce`` (then ``strategy.final=process_best``
as sec. 5.3), ``parsec``, ``proxyless``, ``gdas`` (``final=process_best``), ``darts``.
"""
from pathlib import Path

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file: relative to the working directory
    _REPO = Path(".")
DEFAULT_DIR = (_REPO / "..").resolve() / "shared" / "data" / "ptb"
TRAIN_TOKENS = 929_589         # PTB train incl. <eos> (../shared/data/ptb/SOURCE.md)
BATCH, BPTT, EPOCHS = 256, 35, 30


def get_config():
    per_epoch = (TRAIN_TOKENS // BATCH - 1) // BPTT          # 103 windows
    return {
        "seed": 0,
        "data": {"name": "ptb", "data_dir": str(DEFAULT_DIR) if DEFAULT_DIR.exists() else None},
        "space": {"name": "rnn", "num_nodes": 3, "emb_size": 300, "hidden_size": 300, "bptt": BPTT,
                  "dropout": 0.5, "reward_split": "train", "eval_streams": 10},
        "strategy": {"name": "advantage", "optimizer": "adam", "lr": 3e-3, "b1": 0.9, "b2": 0.999,
                     "clip": 1.0, "lr_schedule": "cosine", "final": "argmax", "zero_op": "none",
                     "decay": 0.95},
        "optimizer": {"name": "sgd", "lr": 20.0, "momentum": 0.0, "weight_decay": 0.0, "clip": 0.25,
                      "schedule": "cosine"},
        "search": {"steps": EPOCHS * per_epoch, "warmup_steps": 0, "batch_size": BATCH,
                   "chunk": per_epoch, "checkpoint_every": 5 * per_epoch, "reward": "neg_loss"},
    }
