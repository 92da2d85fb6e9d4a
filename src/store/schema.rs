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
        traffic_group -> Nullable<Text>,
        runtime -> Nullable<Text>,
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
        routing -> Nullable<Text>,
        timeout_ms -> Nullable<Integer>,
        selector -> Nullable<Text>,
        stage -> Nullable<Text>,
        claim_token -> Nullable<BigInt>,
        started_at -> Nullable<Timestamp>,
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

diesel::table! {
    /// Routing memory per job: round-robin counter (node_id '') and per-node uses for lru/lfu.
    job_route (route_key, node_id) {
        route_key -> Text,
        node_id -> Text,
        uses -> BigInt,
        last_seq -> BigInt,
    }
}

diesel::table! {
    /// Which datacenter a traffic group runs in.
    traffic_policy (group_name) {
        group_name -> Text,
        label -> Text,
        preferred -> Text,
        backup -> Nullable<Text>,
        percent -> Integer,
        sticky -> Bool,
        auto_failover -> Bool,
        auto_failback -> Bool,
        failed_over -> Bool,
        updated_by -> Nullable<Text>,
        reason -> Nullable<Text>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Cron expressions and fixed rates that write `run` tasks (docs/schedules.md).
    schedule (id) {
        id -> BigInt,
        name -> Text,
        app_id -> Nullable<BigInt>,
        cron -> Nullable<Text>,
        every_ms -> Nullable<BigInt>,
        payload -> Text,
        routing -> Nullable<Text>,
        shard_total -> Nullable<Integer>,
        timeout_ms -> Nullable<Integer>,
        max_attempts -> Integer,
        misfire -> Text,
        misfire_grace_ms -> BigInt,
        enabled -> Bool,
        next_fire_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        workflow_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row per fire time of a schedule, or per span of skipped fire times.
    schedule_firing (schedule_id, fire_at) {
        schedule_id -> BigInt,
        fire_at -> Timestamp,
        last_at -> Timestamp,
        times -> BigInt,
        outcome -> Text,
        task_id -> Nullable<BigInt>,
        node_id -> Text,
        created_at -> Timestamp,
        run_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    workflow (id) {
        id -> BigInt,
        name -> Text,
        version -> Integer,
        max_concurrent_runs -> Nullable<Integer>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    workflow_version (workflow_id, version) {
        workflow_id -> BigInt,
        version -> Integer,
        definition -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    workflow_run (id) {
        id -> BigInt,
        workflow_id -> BigInt,
        version -> Nullable<Integer>,
        status -> Text,
        context -> Text,
        task_id -> Nullable<BigInt>,
        cancel_requested -> Bool,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        idempotency_key -> Nullable<Text>,
    }
}

diesel::table! {
    workflow_node_run (run_id, node_key) {
        run_id -> BigInt,
        node_key -> Text,
        status -> Text,
        task_id -> Nullable<BigInt>,
        round -> Integer,
        decision -> Nullable<Bool>,
        error -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(workflow_version -> workflow (workflow_id));
diesel::joinable!(workflow_run -> workflow (workflow_id));
diesel::joinable!(workflow_node_run -> workflow_run (run_id));
diesel::allow_tables_to_appear_in_same_query!(workflow, workflow_version, workflow_run, workflow_node_run, task);

diesel::table! {
    /// Where alarm messages go (docs/alarms.md).
    alarm_channel (id) {
        id -> BigInt,
        name -> Text,
        kind -> Text,
        config -> Text,
        cursor -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Which events go to which channels.
    alarm_rule (id) {
        id -> BigInt,
        name -> Text,
        kinds -> Text,
        filter -> Text,
        channels -> Text,
        throttle_s -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// One message to one channel, and its attempts.
    alarm_delivery (id) {
        id -> BigInt,
        channel_id -> BigInt,
        event_id -> BigInt,
        last_event_id -> BigInt,
        rule_id -> Nullable<BigInt>,
        throttle_key -> Nullable<Text>,
        folded -> BigInt,
        status -> Text,
        attempts -> Integer,
        next_at -> Timestamp,
        owner_node -> Nullable<Text>,
        owner_epoch -> Nullable<BigInt>,
        claim_token -> Nullable<BigInt>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}
