"""The train stage, keeping every epoch's weights: checkpoints/epoch-<N>.pt (a state_dict each).

    python -m benchmarks.keep_epochs      # in a folder the train stage runs in

For benchmarks/large.py --saved-epoch, which scores every epoch's model on the test images: the
run is the train stage's own (cnn_factory.training.fit), its checkpoint after each epoch copied.
"""

from pathlib import Path

import torch

from cnn_factory.training import fit


def main() -> None:
    save = fit.save_checkpoint

    def save_and_keep(path: Path, state: dict) -> None:
        save(path, state)
        if "model" in state:  # the last write only marks the run complete
            torch.save(state["model"], path.parent / f"epoch-{state['epoch']}.pt")

    fit.save_checkpoint = save_and_keep
    from stages.train import main as train

    train()


if __name__ == "__main__":
    main()
