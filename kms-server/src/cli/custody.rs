//! Custody of the master key and of configuration secrets:
//!
//! - `kms master-key rotate --new-key-file F` re-seals every sealed secret under the key
//!   in `F` in one transaction ([`Kms::rotate_master_key`]);
//! - `kms master-key split --shares N --threshold K` prints N shares of the key in use
//!   (Shamir's secret sharing over GF(256), the `blahaj` crate), any K of which give it
//!   back; `kms master-key combine` reads them from stdin and prints the key;
//! - `kms config seal --setting KEY` seals a secret setting's value (read from stdin)
//!   under the master key, for the configuration file or environment
//!   ([`crate::config::sealed`]).
//!
//! Shares are text: `kms-share-1.<threshold>.<x>.<y>.<fingerprint>`, with `y` the share's
//! 32 bytes in base64url and `fingerprint` the first 8 hex digits of a SHA-256 of the key.
//! The fingerprint lets `combine` tell a right set of shares from a mistyped share, one
//! from another split, or too few; it reveals nothing usable about a 256-bit random key.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::Subcommand;
use kms_core::MasterKey;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::bootstrap::load_master_key;
use crate::cli::commands::{open_existing, print_json, CommandError};
use crate::config::Config;

/// `kms master-key ...`.
#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Re-seal every sealed secret (signing keys, request-signing secrets, client secrets,
    /// providers' refresh tokens, pending logins) under the key in FILE, in one
    /// transaction; prints what was re-sealed. Stop every node first, and restart them
    /// with the new key: the old one opens nothing afterwards. A failure (or a crash)
    /// before the commit leaves everything under the old key.
    Rotate {
        /// The new key (base64 of 32 bytes, as a key file holds it).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Create FILE (mode 0600) with a fresh random key first; refused when it exists.
        #[arg(long)]
        generate: bool,
    },
    /// Print N shares of the master key in use, one a line; any THRESHOLD of them give
    /// the key back (`kms master-key combine`), fewer give nothing. Hand each to a
    /// different custodian.
    Split {
        /// How many shares (2 to 255).
        #[arg(long)]
        shares: u8,
        /// How many are needed (2 to N).
        #[arg(long)]
        threshold: u8,
    },
    /// Read shares from stdin (one a line) and print the master key (base64) they give,
    /// or write it to FILE (created, mode 0600). Fails, printing no key, when they are too
    /// few, mistyped or from different splits.
    Combine {
        /// Write the key to this new file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `kms config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Seal a secret setting's value (read from stdin) under the master key and print
    /// `sealed:v1:...`, which the configuration file or the environment may then hold
    /// instead of the plaintext. Settings that take sealed values: alert_webhook_secret,
    /// db and db_replica (PostgreSQL URLs with passwords) and redis; and
    /// idp_client_secret, for the `client_secret` of the JSON `kms idp create|update` read.
    Seal {
        /// The setting the value is for (a sealed value opens only for it).
        #[arg(long, value_name = "KEY")]
        setting: String,
    },
}

/// The text form's leading part.
const SHARE_PREFIX: &str = "kms-share-1";

/// `kms master-key ...`.
pub fn master_key(config: &Config, cmd: MasterKeyCommand) -> Result<(), CommandError> {
    match cmd {
        MasterKeyCommand::Rotate {
            new_key_file,
            generate,
        } => {
            // Nodes keep the key they started with and would go on sealing under the old
            // one: on SQLite, refuse while another process has the file open.
            if config.postgres_url().is_none()
                && config.db.exists()
                && kms_store::backup::in_use_elsewhere(&config.db)
                    .map_err(|e| CommandError::new(e.to_string()))?
            {
                return Err(CommandError::new(format!(
                    "{} is open in another process (a running kms serve?); stop every node first. \
                     Nothing was changed",
                    config.db.display()
                )));
            }
            let new = if generate {
                let key = MasterKey::generate(&kms_core::OsRandom)?;
                crate::bootstrap::write_private_file(&new_key_file, &key.to_base64()).map_err(
                    |e| {
                        CommandError::new(format!(
                            "cannot create the new key file {}: {e}",
                            new_key_file.display()
                        ))
                    },
                )?;
                key
            } else {
                read_key_file(&new_key_file)?
            };
            let kms = open_existing(config)?;
            let report = kms.rotate_master_key(&new)?;
            print_json(&report)?;
            eprintln!(
                "kms: every sealed secret is now under the key in {}; restart every node with \
                 it (--master-key-file, KMS_MASTER_KEY or the master-key command) and keep the \
                 old key only until the backups made under it are gone",
                new_key_file.display()
            );
            Ok(())
        }
        MasterKeyCommand::Split { shares, threshold } => {
            let key = load_master_key(config)?;
            for line in split(&key, shares, threshold)? {
                println!("{line}");
            }
            Ok(())
        }
        MasterKeyCommand::Combine { output } => {
            let mut text = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| CommandError::new(format!("cannot read the shares: {e}")))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let key = combine(&lines)?;
            match output {
                Some(path) => {
                    crate::bootstrap::write_private_file(&path, &key.to_base64()).map_err(|e| {
                        CommandError::new(format!("cannot create {}: {e}", path.display()))
                    })?;
                    print_json(&json!({"file": path, "fingerprint": fingerprint(&key)}))
                }
                None => {
                    println!("{}", key.to_base64());
                    Ok(())
                }
            }
        }
    }
}

/// `kms config ...`.
pub fn config(config: &Config, cmd: ConfigCommand) -> Result<(), CommandError> {
    match cmd {
        ConfigCommand::Seal { setting } => {
            let mut value = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut value)
                .map_err(|e| CommandError::new(format!("cannot read the value: {e}")))?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                return Err(CommandError::new("no value on stdin: nothing to seal"));
            }
            let key = load_master_key(config)?;
            println!(
                "{}",
                crate::config::sealed::seal(&key, &setting, value).map_err(CommandError::new)?
            );
            Ok(())
        }
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey, CommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::new(format!("cannot read {}: {e}", path.display())))?;
    MasterKey::from_base64(text.trim()).map_err(|_| {
        CommandError::new(format!(
            "{} does not hold a base64 key of 32 bytes",
            path.display()
        ))
    })
}

/// The first 8 hex digits of a SHA-256 of the key (domain-separated).
pub fn fingerprint(key: &MasterKey) -> String {
    let mut h = Sha256::new();
    h.update(b"kms master key fingerprint\0");
    h.update(key.as_bytes());
    base16ct::lower::encode_string(&h.finalize()[..4])
}

/// Splits `key` into `shares` text shares, `threshold` of which recover it.
pub fn split(key: &MasterKey, shares: u8, threshold: u8) -> Result<Vec<String>, CommandError> {
    if shares < 2 {
        return Err(CommandError::new("--shares must be from 2 to 255"));
    }
    if !(2..=shares).contains(&threshold) {
        return Err(CommandError::new(format!(
            "--threshold must be from 2 to the number of shares ({shares})"
        )));
    }
    let fp = fingerprint(key);
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(blahaj::Sharks(threshold)
        .dealer(key.as_bytes())
        .take(usize::from(shares))
        .map(|share| {
            let bytes = Vec::from(&share);
            // The first byte is the share's x coordinate (1 to 255), the rest its y.
            let (x, y) = bytes.split_first().map_or((0, &[][..]), |(x, y)| (*x, y));
            format!("{SHARE_PREFIX}.{threshold}.{x}.{}.{fp}", engine.encode(y))
        })
        .collect())
}

/// Parses text shares and recovers the key, checking the fingerprint.
pub fn combine(lines: &[&str]) -> Result<MasterKey, CommandError> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parsed = Vec::new();
    let mut threshold = None;
    let mut fp = None;
    for (n, line) in lines.iter().enumerate() {
        let n = n + 1;
        let bad = || CommandError::new(format!("share {n} is not a kms master-key share"));
        let rest = line
            .trim()
            .strip_prefix(SHARE_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(bad)?;
        let fields: Vec<&str> = rest.split('.').collect();
        let [k, x, y, f] = fields.as_slice() else {
            return Err(bad());
        };
        let k: u8 = k.parse().map_err(|_| bad())?;
        let x: u8 = x.parse().map_err(|_| bad())?;
        let y = engine.decode(y).map_err(|_| bad())?;
        if k < 2 || x == 0 || y.len() != 32 || f.len() != 8 {
            return Err(bad());
        }
        if threshold.is_some_and(|t| t != k) || fp.as_deref().is_some_and(|p: &str| p != *f) {
            return Err(CommandError::new(format!(
                "share {n} comes from another split than share 1"
            )));
        }
        threshold = Some(k);
        fp = Some((*f).to_owned());
        let mut bytes = vec![x];
        bytes.extend(y);
        // A share given twice counts once (interpolating it twice would give a wrong key).
        if !parsed.contains(&bytes) {
            parsed.push(bytes);
        }
    }
    let (Some(threshold), Some(fp)) = (threshold, fp) else {
        return Err(CommandError::new("no shares on stdin"));
    };
    let mut xs: Vec<u8> = parsed.iter().map(|b| b[0]).collect();
    xs.sort_unstable();
    xs.dedup();
    if xs.len() < parsed.len() {
        return Err(CommandError::new(
            "two different shares claim the same position: one is mistyped",
        ));
    }
    if xs.len() < usize::from(threshold) {
        return Err(CommandError::new(format!(
            "{} distinct share(s) given, {threshold} needed",
            xs.len()
        )));
    }
    let shares = parsed
        .iter()
        .map(|b| blahaj::Share::try_from(b.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CommandError::new)?;
    let secret = blahaj::Sharks(threshold)
        .recover(&shares)
        .map_err(CommandError::new)?;
    let bytes: [u8; 32] = secret
        .try_into()
        .map_err(|_| CommandError::new("the shares do not give a 32-byte key"))?;
    let key = MasterKey::from_bytes(bytes);
    if fingerprint(&key) != fp {
        return Err(CommandError::new(
            "the shares do not give the key they were split from: one is mistyped, or they \
             are from different splits",
        ));
    }
    Ok(key)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn any_k_shares_give_the_key_back_and_k_minus_1_give_nothing_usable() {
        let key = MasterKey::generate(&kms_core::OsRandom).unwrap();
        let shares = split(&key, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        // Every 3-subset recovers the key.
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let set = [shares[a].as_str(), shares[b].as_str(), shares[c].as_str()];
                    assert!(combine(&set).unwrap().same_key(&key), "{a}{b}{c}");
                }
            }
        }
        // Two are refused outright...
        let err = combine(&[&shares[0], &shares[1]]).unwrap_err().to_string();
        assert!(err.contains("3 needed"), "{err}");
        // ...and interpolating two anyway (as an attacker could) gives another key.
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw: Vec<blahaj::Share> = shares[..2]
            .iter()
            .map(|s| {
                let f: Vec<&str> = s.split('.').collect();
                let mut b = vec![f[2].parse::<u8>().unwrap()];
                b.extend(engine.decode(f[3]).unwrap());
                blahaj::Share::try_from(b.as_slice()).unwrap()
            })
            .collect();
        let guess = blahaj::Sharks(2).recover(&raw).unwrap();
        assert_ne!(guess.as_slice(), key.as_bytes());
        // A repeated share does not count twice.
        let err = combine(&[&shares[0], &shares[0], &shares[1]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 distinct"), "{err}");
    }

    #[test]
    fn mistyped_or_mixed_shares_are_refused_without_a_key() {
        let key = MasterKey::generate(&kms_core::OsRandom).unwrap();
        let other = MasterKey::generate(&kms_core::OsRandom).unwrap();
        let a = split(&key, 3, 2).unwrap();
        let b = split(&other, 3, 2).unwrap();
        let err = combine(&[&a[0], &b[1]]).unwrap_err().to_string();
        assert!(err.contains("another split"), "{err}");
        // One character of y changed: the fingerprint catches it.
        let mut typo = a[1].clone().into_bytes();
        let i = typo.len() - 12;
        typo[i] = if typo[i] == b'A' { b'B' } else { b'A' };
        let typo = String::from_utf8(typo).unwrap();
        let err = combine(&[&a[0], &typo]).unwrap_err().to_string();
        assert!(err.contains("mistyped"), "{err}");
        for junk in ["", "kms-share-1", "kms-share-1.2.0.AAAA.00000000", "hello"] {
            assert!(combine(&[junk, &a[1]]).is_err(), "{junk:?}");
        }
        assert!(split(&key, 1, 1).is_err());
        assert!(split(&key, 3, 4).is_err());
        assert!(split(&key, 3, 1).is_err());
    }
}
