"""Faces: detection with MediaPipe BlazeFace (:mod:`curate.faces.detect`) and its per-workspace cache
(:mod:`curate.faces.cache`). The ``curate faces`` stage is :mod:`curate.stages.faces`."""
