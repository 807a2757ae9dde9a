-- TrainingJobs the API created and the credits they hold (issue 20). A training's
-- credits are reserved in the transaction that creates it (its row and its `reserve`
-- ledger row), and settled (Succeeded) or refunded (any other end) once by the training
-- watcher. The rows still 'reserved' of a tenant are its unfinished trainings: what the
-- tier's concurrency limit counts. A TrainingJob the API created whose transaction never
-- committed (its replica died between the create and the commit) is 'abandoned' by the
-- watcher once old enough, and cancelled: nobody pays for it, so it must not run.
create table trainings (
    uid          text primary key,
    tenant_id    text references tenants (id) on delete set null,
    namespace    text not null,
    name         text not null,
    cost         numeric(14, 2) not null,
    credits      text not null
                 check (credits in ('reserved', 'settled', 'refunded', 'abandoned')),
    phase        text,
    created_at   timestamptz not null,
    finished_at  timestamptz
);
create index trainings_unfinished on trainings (tenant_id) where credits = 'reserved';
