"""Side-by-side benchmark of wfexs-like against the reference path and skopeo (see README.md)."""
