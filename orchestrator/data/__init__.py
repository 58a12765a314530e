"""Stage 2 — data: the driver's checks and units (``prepare``), the one decoder (``decode``), what a worker reads
(``pipeline``), the embedded default (``builtin``) and manifests of image folders (``manifest``)."""
