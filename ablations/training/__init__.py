"""Training: the cross-encoder trainer and the MICE / late-interaction retrainer, on one shared loop.

- ``loop`` — :func:`~ablations.training.loop.fit`, the one training loop (checkpoint and resume, refusing a
  checkpoint written with other settings; periodic validation, early stopping, the best model kept; the
  end-of-run summary, ``history.csv`` and ``losses.csv``), driven by a :class:`Run` of :class:`Phase` s, and
  the shared pieces: the losses (``group_loss``, ``LOSSES``), ``optimizer_step``, ``bf16_enabled``;
- ``train`` — :class:`TrainConfig`, :class:`Stage`, the named ``TRAINING_PRESETS`` (dl19, dl20, smoke) and
  :func:`train`: a cross-encoder distilled from a bi-encoder, then fine-tuned on judged pairs;
- ``retrain`` — :class:`RetrainConfig`, :class:`Student` and :func:`retrain`: a
  MICE model (or a MaxSim / LITE baseline) fine-tuned under its mask from the cross-encoder's weights.

The command lines are ``python -m ablations.train`` and ``python -m ablations.retrain``.
"""
