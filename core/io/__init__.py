"""Files in, facts out: graph facts, file safety, model loading, repairs, datasets, files, sandbox, sessions."""
