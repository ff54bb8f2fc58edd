"""Container records as a Workflow Run Crate (RO-Crate), and back.

``write_crate`` describes what a workflow ran in the field's standard (RO-Crate
1.1 with the Process Run Crate / Workflow Run Crate 0.5 ``ContainerImage``
terms), so WfExS-backend, WorkflowHub and runcrate users can read it;
``read_crate`` turns such a crate, ours or WfExS-backend's, back into
Container records pinned to the recorded digests, so materializing them
gives the same images again. The two halves share only the vocabulary in
``terms``.
"""

from __future__ import annotations

from .read import MAX_CRATE_BYTES, crate_metadata_path, read_crate
from .terms import METADATA_FILE
from .write import crate_metadata, write_crate

__all__ = [
    "MAX_CRATE_BYTES",
    "METADATA_FILE",
    "crate_metadata",
    "crate_metadata_path",
    "read_crate",
    "write_crate",
]
