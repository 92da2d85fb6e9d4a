//! diesel's view of the tables in `migrations/` (the same on both backends).
//! `BigInt` ids map to BIGSERIAL on PostgreSQL and `INTEGER PRIMARY KEY` on SQLite.

diesel::table! {
    /// Things Rota manages for their whole life.
    application (id) {
        id -> BigInt,
        name -> Text,
        driver -> Text,
        spec -> Text,
        selector -> Text,
        desired_state -> Text,
        state -> Text,
        owner_node -> Nullable<Text>,
        owner_epoch -> Nullable<BigInt>,
        restart_policy -> Text,
        max_restarts -> Integer,
        restart_count -> Integer,
        monitor_interval_ms -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// One command each.
    task (id) {
        id -> BigInt,
        app_id -> Nullable<BigInt>,
        action -> Text,
        payload -> Text,
        status -> Text,
        priority -> Integer,
        run_after -> Timestamp,
        attempts -> Integer,
        max_attempts -> Integer,
        owner_node -> Nullable<Text>,
        owner_epoch -> Nullable<BigInt>,
        idempotency_key -> Nullable<Text>,
        parent_id -> Nullable<BigInt>,
        shard_index -> Nullable<Integer>,
        shard_total -> Nullable<Integer>,
        target_node -> Nullable<Text>,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        claimed_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Append-only history.
    event (id) {
        id -> BigInt,
        at -> Timestamp,
        kind -> Text,
        app_id -> Nullable<BigInt>,
        task_id -> Nullable<BigInt>,
        node_id -> Nullable<Text>,
        actor -> Nullable<Text>,
        message -> Text,
        data -> Text,
    }
}

diesel::table! {
    /// The standalone membership lock (one row).
    membership_lock (name) {
        name -> Text,
        node_id -> Text,
        holder -> Text,
        host -> Text,
        pid -> BigInt,
        pid_space -> Text,
        addr -> Text,
        epoch -> BigInt,
        acquired_at -> Timestamp,
        heartbeat_at -> Timestamp,
    }
}
