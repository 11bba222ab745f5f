use super::*;

fn model() -> Value {
    json!({
        "name": "shop-prod",
        "services": {
            "db": {"image": "postgres:16", "restart": "unless-stopped", "command": null, "entrypoint": null,
                   "environment": {"POSTGRES_DB": "shop"},
                   "volumes": [{"type": "volume", "source": "db-data", "target": "/var/lib/postgresql/data", "volume": {}}],
                   "networks": {"default": null}},
            "web": {"build": {"context": "."}, "image": "shop-web:x", "restart": "unless-stopped",
                    "container_name": "web", "env_file": [".env"],
                    "depends_on": {"db": {"condition": "service_healthy"}},
                    "environment": {"DJANGO_SECRET_KEY": "s3cret"},
                    "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "timeout": "5s", "retries": 10, "start_interval": "1s"},
                    "volumes": [{"type": "volume", "source": "static", "target": "/app/staticfiles", "volume": {}},
                                {"type": "volume", "source": "media", "target": "/app/media", "volume": {}}]},
            "nginx": {"image": "nginx", "restart": "unless-stopped",
                      "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
                      "volumes": [{"type": "bind", "source": "/p/nginx/default.conf", "target": "/etc/nginx/conf.d/default.conf", "read_only": true, "bind": {"create_host_path": true}},
                                  {"type": "volume", "source": "static", "target": "/srv/static", "read_only": true, "volume": {}},
                                  {"type": "volume", "source": "media", "target": "/srv/media", "read_only": true, "volume": {}},
                                  {"type": "volume", "source": "nginx-live", "target": "/etc/nginx/countable", "volume": {}}]},
            "redis": {"image": "redis:7"}
        },
        "volumes": {"db-data": {"name": "shop-prod_db-data"}, "static": {"name": "shop-prod_static"}, "media": {"name": "shop-prod_media"}},
        "networks": {"default": {"name": "shop-prod_default", "ipam": {}}},
        "x-logging": {"driver": "json-file"}
    })
}

fn spec<'a>(replicas: &'a BTreeMap<String, u32>, publish: PublishMode) -> Spec<'a> {
    Spec {
        web: "web",
        db: "db",
        nginx: "nginx",
        web_image: "reg:5000/shop-web:prod-3-abc",
        labels: [("org.countable.release".to_string(), "3".to_string())]
            .into_iter()
            .collect(),
        replicas,
        publish,
        endpoint: EndpointMode::Dnsrr,
        db_node: "node-a",
        media_volume: "media",
    }
}

fn read_conf(p: &Path) -> std::io::Result<Vec<u8>> {
    match p.to_str() {
        Some("/p/nginx/default.conf") => Ok(b"server {}".to_vec()),
        Some("/p/init.sql") => Ok(b"CREATE EXTENSION citext;".to_vec()),
        Some("/p/token") => Ok(b"s3cret".to_vec()),
        Some("/p/conf.d") => Err(std::io::ErrorKind::IsADirectory.into()),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    }
}

#[test]
fn a_compose_model_becomes_a_stack() {
    let replicas = BTreeMap::new();
    let st = transform(&model(), &spec(&replicas, PublishMode::Host), &read_conf).unwrap();
    let d = &st.doc;
    assert_eq!(d["version"], "3.8");
    assert!(d.get("name").is_none() && d.get("x-logging").is_none());
    let web = &d["services"]["web"];
    for gone in [
        "build",
        "restart",
        "container_name",
        "env_file",
        "depends_on",
    ] {
        assert!(web.get(gone).is_none(), "{gone} stays in web");
    }
    assert_eq!(web["image"], "reg:5000/shop-web:prod-3-abc");
    assert_eq!(web["environment"]["DJANGO_SECRET_KEY"], "s3cret");
    assert!(web["healthcheck"].get("start_interval").is_none());
    assert_eq!(web["deploy"]["replicas"], 2);
    assert_eq!(web["deploy"]["update_config"]["order"], "start-first");
    assert_eq!(web["deploy"]["update_config"]["failure_action"], "rollback");
    // 2 s × 10 retries + 5 s timeout.
    assert_eq!(st.monitor, Duration::from_secs(25));
    assert_eq!(web["deploy"]["update_config"]["monitor"], "25s");
    assert_eq!(web["deploy"]["labels"]["org.countable.release"], "3");
    assert_eq!(web["deploy"]["endpoint_mode"], "dnsrr");
    assert_eq!(web["deploy"]["restart_policy"]["condition"], "any");

    let db = &d["services"]["db"];
    assert!(db.get("command").is_none() && db.get("entrypoint").is_none());
    assert_eq!(
        db["deploy"]["placement"]["constraints"][0],
        "node.hostname == node-a"
    );
    assert_eq!(db["deploy"]["update_config"]["order"], "stop-first");
    assert_eq!(db["deploy"]["replicas"], 1);

    let nginx = &d["services"]["nginx"];
    assert_eq!(nginx["deploy"]["mode"], "global");
    assert_eq!(nginx["ports"][0]["mode"], "host");
    assert_eq!(nginx["ports"][0]["published"], 8080);
    assert_eq!(nginx["deploy"]["update_config"]["order"], "stop-first");
    let conf = &nginx["configs"][0];
    assert_eq!(conf["target"], "/etc/nginx/conf.d/default.conf");
    let key = conf["source"].as_str().unwrap();
    assert!(key.starts_with("default_conf_"), "{key}");
    assert_eq!(d["configs"][key]["file"], "/p/nginx/default.conf");
    assert_eq!(st.configs, vec![key.to_string()]);
    assert_eq!(
        nginx["volumes"].as_array().unwrap().len(),
        2,
        "the bind became a config"
    );

    assert_eq!(
        d["services"]["redis"]["deploy"]["update_config"]["order"],
        "start-first"
    );
    assert_eq!(
        d["volumes"]["db-data"]["name"], "shop-prod_db-data",
        "one host's data stays the stack's"
    );
    assert!(d["networks"]["default"].get("name").is_none());
    assert_eq!(d["networks"]["default"]["driver"], "overlay");
    assert_eq!(d["networks"]["default"]["attachable"], true);

    let job = &d["services"]["web-static"];
    assert_eq!(st.static_job.as_deref(), Some("web-static"));
    assert_eq!(job["deploy"]["mode"], "global-job");
    assert_eq!(job["environment"]["DJANGO_MIGRATE"], "0");
    let mounts: Vec<&str> = job["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, vec!["static"], "the job never touches media");
}

#[test]
fn a_changed_file_is_a_new_config_and_settings_apply() {
    let replicas: BTreeMap<String, u32> = [("web".to_string(), 3)].into_iter().collect();
    let a = transform(&model(), &spec(&replicas, PublishMode::Ingress), &read_conf).unwrap();
    let b = transform(&model(), &spec(&replicas, PublishMode::Ingress), &|_| {
        Ok(b"server { listen 81; }".to_vec())
    })
    .unwrap();
    assert_ne!(a.configs, b.configs);
    assert_eq!(a.doc["services"]["web"]["deploy"]["replicas"], 3);
    assert_eq!(a.doc["services"]["nginx"]["ports"][0]["mode"], "ingress");
    assert_eq!(
        a.doc["services"]["nginx"]["deploy"]["update_config"]["order"],
        "start-first"
    );
}

#[test]
fn what_a_swarm_cannot_run_is_refused() {
    let replicas = BTreeMap::new();
    let mut m = model();
    m["services"]["web"]["network_mode"] = json!("host");
    assert!(matches!(
        transform(&m, &spec(&replicas, PublishMode::Host), &read_conf),
        Err(StackError::NetworkMode(_))
    ));
    let mut m = model();
    m["services"]["nginx"]["volumes"][0]["source"] = json!("/p/conf.d");
    assert!(matches!(
        transform(&m, &spec(&replicas, PublishMode::Host), &read_conf),
        Err(StackError::BindDirectory { .. })
    ));
    let mut m = model();
    m["services"].as_object_mut().unwrap().remove("db");
    assert!(matches!(
        transform(&m, &spec(&replicas, PublishMode::Host), &read_conf),
        Err(StackError::NoService(_))
    ));
    let big = transform(&model(), &spec(&replicas, PublishMode::Host), &|_| {
        Ok(vec![b'x'; 600_000])
    });
    assert!(matches!(big, Err(StackError::BindTooLarge { .. })));
}

#[test]
fn go_durations_parse() {
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("soon"), None);
}

#[test]
fn the_compose_files_own_settings_stand() {
    let mut m = model();
    m["services"]["redis"]["deploy"] =
        json!({"replicas": 3, "update_config": {"order": "stop-first"}});
    m["services"]["redis"]["restart"] = json!("on-failure:4");
    m["services"]["worker"] = json!({"image": "shop-web:x", "deploy": {"mode": "global", "restart_policy": {"condition": "none"}}});
    m["services"]["db"]["configs"] =
        json!([{"source": "init", "target": "/docker-entrypoint-initdb.d/init.sql"}]);
    m["services"]["web"]["secrets"] = json!([{"source": "token"}]);
    m["configs"] = json!({"init": {"file": "/p/init.sql"}});
    m["secrets"] = json!({"token": {"file": "/p/token"}, "outside": {"external": true}});
    let none = BTreeMap::new();
    let st = transform(&m, &spec(&none, PublishMode::Host), &read_conf).unwrap();
    let d = &st.doc;
    let redis = &d["services"]["redis"]["deploy"];
    assert_eq!(
        redis["replicas"], 3,
        "the file's replicas when countable.yml names none"
    );
    assert_eq!(redis["update_config"]["order"], "stop-first");
    assert_eq!(
        redis["restart_policy"],
        json!({"condition": "on-failure", "delay": "5s", "max_attempts": 4})
    );
    let worker = &d["services"]["worker"]["deploy"];
    assert_eq!(worker["mode"], "global");
    assert!(worker.get("replicas").is_none());
    assert_eq!(worker["restart_policy"]["condition"], "none");
    // Their own configs and secrets are carried, named by content.
    let init = d["configs"]["init"]["name"].as_str().unwrap();
    assert!(init.starts_with("init_"), "{init}");
    assert!(st.configs.contains(&init.to_string()) && st.configs.contains(&"init".to_string()));
    assert_eq!(d["services"]["db"]["configs"][0]["source"], "init");
    assert!(d["secrets"]["token"]["name"]
        .as_str()
        .unwrap()
        .starts_with("token_"));
    assert_eq!(d["secrets"]["outside"]["external"], true);
    let replicas: BTreeMap<String, u32> = [("redis".to_string(), 2)].into_iter().collect();
    let st = transform(&m, &spec(&replicas, PublishMode::Host), &read_conf).unwrap();
    assert_eq!(
        st.doc["services"]["redis"]["deploy"]["replicas"], 2,
        "countable.yml wins"
    );
    let mut changed = m.clone();
    changed["configs"]["init"]["file"] = json!("/p/token");
    let other = transform(&changed, &spec(&none, PublishMode::Host), &read_conf).unwrap();
    assert_ne!(
        other.doc["configs"]["init"]["name"],
        d["configs"]["init"]["name"]
    );
}
