//! Profiles (`fixtures/rfc5321/profiles/<name>.txt`): what "pass" means for a server family,
//! and the documented deviations of that family, each with its reason.
//!
//! ```text
//! match codes|text        # codes: reply codes only; text: also the exact texts
//! tags mta qmail          # which `@tag` texts apply, most specific first
//! deviate ID reason...    # entry ID is a known, explained departure
//! ```

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Codes,
    Text,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub compare: Compare,
    pub tags: Vec<String>,
    /// Entry id → reason.
    pub deviations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {name}: line {line}: {why}")]
    Parse {
        name: String,
        line: usize,
        why: String,
    },
    #[error("profile {0}: {1}")]
    Io(String, std::io::Error),
}

impl Profile {
    pub fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
        let mut p = Profile {
            name: name.to_string(),
            compare: Compare::Codes,
            tags: Vec::new(),
            deviations: BTreeMap::new(),
        };
        for (n, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let err = |why: &str| ProfileError::Parse {
                name: name.to_string(),
                line: n + 1,
                why: why.to_string(),
            };
            let (key, rest) = l.split_once(' ').unwrap_or((l, ""));
            match key {
                "match" => {
                    p.compare = match rest.trim() {
                        "codes" => Compare::Codes,
                        "text" => Compare::Text,
                        _ => return Err(err("match is codes or text")),
                    }
                }
                "tags" => p.tags = rest.split_whitespace().map(str::to_string).collect(),
                "deviate" => {
                    let (id, why) = rest
                        .trim()
                        .split_once(' ')
                        .ok_or_else(|| err("deviate needs an id and a reason"))?;
                    p.deviations.insert(id.to_string(), why.trim().to_string());
                }
                _ => return Err(err("unknown key")),
            }
        }
        Ok(p)
    }

    /// `dir/<name>.txt`.
    pub fn load(dir: &Path, name: &str) -> Result<Profile, ProfileError> {
        let path = dir.join(format!("{name}.txt"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| ProfileError::Io(name.to_string(), e))?;
        Profile::parse(name, &text)
    }

    /// The text this profile expects among an expectation's texts: the first of its tags that
    /// has one, else the untagged one; `None` when only codes are compared.
    pub fn text<'a>(&self, texts: &'a [(String, String)]) -> Option<&'a str> {
        if self.compare == Compare::Codes {
            return None;
        }
        self.tags
            .iter()
            .find_map(|t| texts.iter().find(|(tag, _)| tag == t))
            .or_else(|| texts.iter().find(|(tag, _)| tag.is_empty()))
            .map(|(_, t)| t.as_str())
    }
}
