"""Run by tests/test_faults.py: `distilnlp distill ARGS...` whose checkpoint save at step N blocks forever
after the weights are written (before optimizer, scheduler and trainer_state), so the test can kill -9 the
process in the middle of a save.

    python fault_runner.py N READY_FILE distill-args...

READY_FILE is written (with this PID) once the save is blocked.
"""

import os
import sys
import time
from pathlib import Path

from distilnlp.commands.cli import main
from distilnlp.distill.trainer import DistillationTrainer

block_step, ready = int(sys.argv[1]), Path(sys.argv[2])
save_rest = DistillationTrainer._save_optimizer_and_scheduler


def blocking_save(self, output_dir):
    if self.state.global_step == block_step:
        ready.write_text(str(os.getpid()))
        time.sleep(3600)
    return save_rest(self, output_dir)


DistillationTrainer._save_optimizer_and_scheduler = blocking_save
sys.exit(main(["distill", *sys.argv[3:]]))
