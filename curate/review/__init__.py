"""``curate review``'s FiftyOne side: the records the App shows (:mod:`curate.review.records`, pure) and
the FiftyOne adapter (:mod:`curate.review.app`). The stage, and the meaning of a person's tags, is
:mod:`curate.stages.review`."""
