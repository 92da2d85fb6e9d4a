//! A broken configuration or an unreachable database stops `rota` at start with a clear message
//! naming what is wrong, and a non-zero exit.

mod common;

use common::{rota, run};

fn serve_fails(args: &[&str], envs: &[(&str, &str)], needles: &[&str]) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rota();
    cmd.args(["serve", "--data-dir"]).arg(dir.path()).args(args);
    if !args.contains(&"--listen") && !envs.iter().any(|(k, _)| *k == "ROTA_LISTEN") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let (status, _, err) = run(&mut cmd);
    assert!(!status.success(), "must fail: {args:?} {envs:?}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention `{n}`:\n{err}");
    }
    status.code().unwrap_or(-1)
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    std::fs::write(&file, "[database]\npool_sise = 4\n").unwrap();
    let code = serve_fails(&["--config", file.to_str().unwrap()], &[], &["pool_sise"]);
    assert_eq!(code, 2);
}

#[test]
fn an_unknown_section_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    std::fs::write(&file, "[databse]\nurl = \"x\"\n").unwrap();
    serve_fails(&["--config", file.to_str().unwrap()], &[], &["databse"]);
}

#[test]
fn a_bad_value_from_the_environment_is_named() {
    let code = serve_fails(&[], &[("ROTA__DATABASE__POOL_SIZE", "many")], &["pool_size"]);
    assert_eq!(code, 2);
    serve_fails(&[], &[("ROTA__DATABASE__POOL_SIZE", "0")], &["database.pool_size", "at least 1"]);
}

#[test]
fn a_bad_listen_address_is_named() {
    serve_fails(&[], &[("ROTA_LISTEN", "not-an-address")], &["server.listen"]);
    serve_fails(&["--listen", "127.0.0.1:99999"], &[], &["server.listen"]);
}

#[test]
fn a_pass_env_name_that_cannot_be_passed_is_named() {
    let code = serve_fails(&["--pass-env", "ROTA__DATABASE__URL"], &[], &["drivers.pass_env", "never passed on"]);
    assert_eq!(code, 2);
    serve_fails(
        &[],
        &[("ROTA__DRIVERS__PASS_ENV", r#"["A B"]"#)],
        &["drivers.pass_env", "`A B` is not a variable name"],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    serve_fails(&["--config", "/nonexistent/rota.toml"], &[], &["/nonexistent/rota.toml", "does not exist"]);
}

#[test]
fn an_unsupported_database_url_is_named() {
    serve_fails(&["--database-url", "mysql://root@127.0.0.1/x"], &[], &["database.url", "postgres://"]);
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let code = serve_fails(
        &["--database-url", "postgres://postgres:hunter2@127.0.0.1:1/rota"],
        &[],
        &["cannot open the database", "127.0.0.1:1", "ROTA_DATABASE_URL"],
    );
    assert_eq!(code, 1);
    let dir = tempfile::tempdir().unwrap();
    let (_, _, err) = run(rota()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", "postgres://postgres:hunter2@127.0.0.1:1/rota"]));
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    serve_fails(&["--listen", &addr], &[], &["cannot listen on", &addr]);
}

#[test]
fn a_token_that_could_never_match_or_shares_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    std::fs::write(&file, "[api]\ntokens = [{ name = \"ops\", token = \" 0123456789abcdef\", scope = \"admin\" }]\n")
        .unwrap();
    let code = serve_fails(&["--config", file.to_str().unwrap()], &[], &["api.tokens", "`ops`", "space"]);
    assert_eq!(code, 2);
    std::fs::write(
        &file,
        "[api]\ntokens = [{ name = \"ops\", token = \"0123456789abcdef\", scope = \"admin\" },\n\
         { name = \"ci\", token = \"0123456789abcdef\", scope = \"read\" }]\n",
    )
    .unwrap();
    serve_fails(&["--config", file.to_str().unwrap()], &[], &["api.tokens", "`ops`", "`ci`", "same secret"]);
}
