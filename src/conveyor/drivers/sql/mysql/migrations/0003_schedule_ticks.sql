-- The latest tick each schedule pushed and its job (see Driver.mark_tick).
CREATE TABLE IF NOT EXISTS {prefix}schedule_ticks (
    name   VARBINARY(255) NOT NULL,
    tick   DOUBLE         NOT NULL,
    job_id VARBINARY(64)  NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
