-- When DELETE /v1/jobs/{id}/outputs removed the job's output objects; null while kept.
alter table jobs add column outputs_deleted_at timestamptz;
