"""Where data lives and how outputs are written: locations (local paths and object-store URLs, atomic files),
the one-writer lease of an output (`lease`: flock; `object_lease`: conditional puts), the part files a run
resumes from (`parts`), and the output they become, complete or not at all (`output`)."""
