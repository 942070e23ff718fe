"""Jobs: the run store, the queue, worker entries and the registry of job kinds."""
