"""Training and evaluation, as plain functions.

- :mod:`~semseg.engine.setup`: a run assembled from its config (model, data, loss, optimizer) into a :class:`~semseg.engine.trainer.Trainer`;
- :mod:`~semseg.engine.loop`: ``fit`` -> ``train_one_epoch``, validation, logging, checkpoints; ``train`` (the command);
- :mod:`~semseg.engine.evaluate`: ``evaluate`` (one confusion matrix), ``evaluate_checkpoint`` (``semseg val``);
- :mod:`~semseg.engine.state`: RNG states, the checkpoint of a run, exact resume;
- :mod:`~semseg.engine.optim`, :mod:`~semseg.engine.distributed`: parameter groups and schedules, DDP helpers;
- :mod:`~semseg.engine.demo`: ``semseg demo`` on the sample shipped in the package.
"""
