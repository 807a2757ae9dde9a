"""What the operator knows of the cluster, fed by watches: the fleet of workers, the
GenerationJobs and the ModelCaches (and the models a job resolves to)."""
