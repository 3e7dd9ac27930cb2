//! The config file's parsing, environment overrides, checks and secrets.
use super::*;
use secrecy::ExposeSecret as _;

const MINIMAL: &str = r#"
    [cloudstack]
    endpoint = "https://cloud.example.com/client/api"
    api_key = "key"

    [target]
    zone_id = "z"
    service_offering_id = "o"
    template_id = "t"
"#;

#[test]
fn the_example_config_parses_and_passes_its_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/ferry.toml");
    let text = std::fs::read_to_string(&path).expect("docs/examples/ferry.toml exists");
    let config = Config::parse(&text).expect("the example parses");
    config.check().expect("the example passes its checks");
    assert_eq!(config.appliances.len(), 1);
    assert_eq!(config.hooks.before_live.len(), 2);
    assert_eq!(config.hooks.after_rollback.len(), 1);
    assert!(config.guest_prep.is_some());
    assert!(config.database.url.starts_with("postgres://"));
    assert!(config.console.enabled);
    assert_eq!(config.console.session_hours, 8);
}

#[test]
fn defaults_fill_what_a_minimal_file_leaves_out() {
    let config = Config::parse(MINIMAL).expect("parses");
    config.check().expect("valid");
    assert_eq!(config.server.listen, default_listen());
    assert_eq!(config.database.url, "ferry.db");
    assert_eq!(config.engine.lease_secs, 30);
    assert!(config.guest_prep.is_none());
    assert_eq!(config.console, ConsoleSection::default());
    assert!(config.console.enabled, "the console is on by default");
}

#[test]
fn the_console_can_be_switched_off_and_its_sessions_are_bounded() {
    let off = Config::parse(&format!("{MINIMAL}\n[console]\nenabled = false\n")).expect("parses");
    off.check().expect("valid");
    assert!(!off.console.enabled);
    let forever =
        Config::parse(&format!("{MINIMAL}\n[console]\nsession_hours = 0\n")).expect("parses");
    let error = forever.check().expect_err("refused").to_string();
    assert!(
        error.contains("console.session_hours must be between 1 and 168"),
        "{error}"
    );
    let unknown =
        Config::parse(&format!("{MINIMAL}\n[console]\nport = 1\n")).expect_err("unknown key");
    assert!(unknown.contains("unknown field `port`"), "{unknown}");
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let text = format!("{MINIMAL}\n[engine]\nworkers = 3\n");
    let error = Config::parse(&text).expect_err("unknown key");
    assert!(error.contains("unknown field `workers`"), "{error}");
}

#[test]
fn the_environment_overrides_the_file() {
    let mut config = Config::parse(MINIMAL).expect("parses");
    config
        .apply_env(|name| match name {
            "FERRY_DATABASE_URL" => Some("postgres://db/ferry".into()),
            "FERRY_LISTEN" => Some("0.0.0.0:9000".into()),
            _ => None,
        })
        .expect("applies");
    assert_eq!(config.database.url, "postgres://db/ferry");
    assert_eq!(config.server.listen.port(), 9000);
    let bad = config.apply_env(|name| (name == "FERRY_LISTEN").then(|| "nine".into()));
    assert!(bad.unwrap_err().to_string().contains("FERRY_LISTEN=`nine`"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = MINIMAL
        .replace("https://cloud.example.com/client/api", "cloud.example.com")
        .replace("zone_id = \"z\"", "zone_id = \"\"");
    let config = Config::parse(&text).expect("parses");
    let error = config.check().expect_err("invalid").to_string();
    assert!(error.contains("2 problem(s)"), "{error}");
    assert!(error.contains("target.zone_id is empty"), "{error}");
    assert!(error.contains("not an http(s) URL"), "{error}");
}

fn built() -> Builder {
    Builder::new(
        "http://127.0.0.1:8080/client/api",
        "key",
        TargetSection {
            zone_id: "z".into(),
            service_offering_id: "o".into(),
            template_id: "t".into(),
        },
    )
}

#[test]
fn a_built_config_reads_back_as_itself() {
    let config = built()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .database("/tmp/ferry.db")
        .poll_ms(5, 50)
        .job_deadline_secs(60)
        .appliance("oma", "vm-1", "/tmp/sysfs")
        .engine(EngineSection {
            worker_name: Some("w".into()),
            lease_secs: 2,
            ..EngineSection::default()
        })
        .guest_prep(volumed::GuestPrep::new("prepare", ["{device}"]))
        .hooks(workflows::Hooks {
            before_live: vec![workflows::Hook::Command {
                program: "power-off".into(),
                args: Vec::new(),
                timeout_secs: 300,
            }],
            after_rollback: Vec::new(),
        })
        .build()
        .expect("passes its checks");
    let text = config.to_toml().expect("writes");
    assert_eq!(Config::parse(&text).expect("parses"), config, "{text}");
    // What a builder leaves alone is the file's default.
    let minimal = built().build().expect("passes its checks");
    assert_eq!(
        minimal,
        Config::parse(&minimal.to_toml().expect("writes")).expect("parses")
    );
    assert_eq!(
        Config {
            cloudstack: CloudStackSection {
                endpoint: "http://127.0.0.1:8080/client/api".into(),
                ..Config::parse(MINIMAL).expect("parses").cloudstack
            },
            ..Config::parse(MINIMAL).expect("parses")
        },
        minimal
    );
}

#[test]
fn a_built_config_is_checked() {
    let error = built().poll_ms(0, 0).toml().expect_err("invalid");
    assert!(error.to_string().contains("poll_first_ms"), "{error}");
}

#[test]
fn the_job_duration_scale_sets_the_priors_and_must_be_a_pace() {
    let config = built().job_duration_scale(2.0).build().expect("valid");
    assert_eq!(
        config.job_priors().get("attachVolume"),
        Some(std::time::Duration::from_secs(6))
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 5_000.0] {
        let error = built().job_duration_scale(bad).toml().expect_err("invalid");
        assert!(
            error
                .to_string()
                .contains("cloudstack.job_duration_scale must be"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_are_required() {
    use secrecy::ExposeSecret;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-file\n").expect("writes");
    let mut config = Config::parse(MINIMAL).expect("parses");
    let missing = config.cloudstack_secret(|_| None).expect_err("no secret");
    assert!(
        missing.to_string().contains("FERRY_CLOUDSTACK_SECRET"),
        "{missing}"
    );
    config.cloudstack.secret_key_file = Some(file);
    let from_file = config.cloudstack_secret(|_| None).expect("file");
    assert_eq!(from_file.expose_secret(), "from-file");
    let from_env = config
        .cloudstack_secret(|name| (name == "FERRY_CLOUDSTACK_SECRET").then(|| "env".into()))
        .expect("env");
    assert_eq!(from_env.expose_secret(), "env");
    let token = config.api_token(|name| (name == "FERRY_TOKEN").then(String::new));
    assert!(
        token
            .unwrap_err()
            .to_string()
            .contains("API token is empty")
    );
}

#[test]
fn an_appliance_agent_needs_https_off_loopback_and_its_token() {
    let with = |entry: &str| Config::parse(&format!("{MINIMAL}\n[[appliances]]\n{entry}\n"));
    let refused = |entry: &str| {
        let config = with(entry).expect("parses");
        match config.check() {
            Err(ConfigError::Invalid(message)) => message,
            other => panic!("{entry}: expected a refusal, got {other:?}"),
        }
    };
    for ok in [
        "name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"https://oma-1.example.com:8091\"",
        "name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"http://127.0.0.1:8091\"",
        "name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"http://[::1]:8091\"",
        "name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"http://localhost:8091\"",
    ] {
        with(ok).expect("parses").check().expect(ok);
    }
    let clear =
        refused("name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"http://oma-1.example.com:8091\"");
    assert!(
        clear.contains("plain http") && clear.contains("https://"),
        "{clear}"
    );
    let scheme = refused("name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"oma-1:8091\"");
    assert!(scheme.contains("not an http(s) URL"), "{scheme}");
    let orphan = refused("name = \"a\"\nvm_id = \"v\"\nvolumed_token_file = \"/t\"");
    assert!(orphan.contains("no volumed_url"), "{orphan}");

    // The token: from the entry's file, else FERRY_VOLUMED_TOKEN, else a clear refusal.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("oma.token");
    std::fs::write(&file, "from-file\n").expect("written");
    let config = with(&format!(
        "name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"https://oma\"\nvolumed_token_file = \"{}\"",
        file.display()
    ))
    .expect("parses");
    let tokens = config
        .agent_tokens(|_| Some("from-env".into()))
        .expect("tokens");
    assert_eq!(tokens["a"].expose_secret(), "from-file");
    let config =
        with("name = \"a\"\nvm_id = \"v\"\nvolumed_url = \"https://oma\"").expect("parses");
    let tokens = config
        .agent_tokens(|_| Some("from-env".into()))
        .expect("tokens");
    assert_eq!(tokens["a"].expose_secret(), "from-env");
    let missing = config.agent_tokens(|_| None).expect_err("no token");
    assert!(
        missing.to_string().contains("appliance `a`")
            && missing.to_string().contains("FERRY_VOLUMED_TOKEN"),
        "{missing}"
    );
}
