"""``ostinato eval``: how the shipped model plays, measured the way musicians run it.

Above the engine (it generates through :class:`~ostinato.engine.engine.Engine`, as the daemon
and ``ostinato continue`` do) and below the command line:

* :mod:`~ostinato.evaluate.continuation`: likelihood, and 4 bars → the next 4 against the
  baselines (``--mode continuation``);
* :mod:`~ostinato.evaluate.loop`: one pass of a loop → its next pass (``--mode loop``);
* :mod:`~ostinato.evaluate.jam`: long self-fed jams and every meter (``--mode jam``);
* :mod:`~ostinato.evaluate.accompany`: the parts asked for under the musician's
  (``--mode accompany``), scored by :mod:`~ostinato.evaluate.band`;
* :mod:`~ostinato.evaluate.continuers` (the model in each mode, the baselines),
  :mod:`~ostinato.evaluate.metrics`, :mod:`~ostinato.evaluate.bars` (token bars, their notes
  and parts) and :mod:`~ostinato.evaluate.rolls` (piano rolls, ``--rolls DIR``).
"""
