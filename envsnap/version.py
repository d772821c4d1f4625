"""envsnap's version, in one place: the package, the wheel envsnap builds for its images and the
manifests it writes all read it here."""

__version__ = "0.1.0"
