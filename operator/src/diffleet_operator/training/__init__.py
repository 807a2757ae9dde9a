"""TrainingJobs (issue 20): admission, the training queue below every inference tier,
preemption, and the worker's training events written into the status."""
