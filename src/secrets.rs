//! DEV SHIM (replaced by the secrets branch): plaintext secrets/<env>.env.
use std::path::Path;
pub struct EnvSecrets(Vec<(String, String)>);
impl EnvSecrets {
    pub fn entries(&self) -> &[(String, String)] {
        &self.0
    }
}
pub fn load(root: &Path, env: &crate::names::EnvName) -> anyhow::Result<Option<EnvSecrets>> {
    let p = root.join(format!("secrets/{env}.env"));
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(Some(EnvSecrets(crate::envfile::parse(&t)))),
        Err(_) => Ok(None),
    }
}
