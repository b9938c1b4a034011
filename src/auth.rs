//! Credentials: argon2id password hashes, HS256 access tokens, and random opaque
//! tokens (refresh tokens, API keys) that are stored only as SHA-256 digests.

use anyhow::anyhow;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of API keys, so they are recognisable in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "shoal_sk_";
/// What an API-channel inbox token starts with, so a leaked one is recognisable.
pub const INBOX_TOKEN_PREFIX: &str = "shoal_inbox_";

#[derive(Clone)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow!("argon2 parameters: {e}"))?;
        Ok(PasswordHashing { params })
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        self.hash_in(password, &mut HashMemory::default())
    }

    /// Checks a password against a stored hash; the hash carries its own parameters.
    pub fn verify(&self, password: &str, hash: &str) -> bool {
        self.verify_in(password, hash, &mut HashMemory::default())
    }

    /// [`PasswordHashing::hash`] in `memory`, which a thread keeps from hash to hash.
    pub fn hash_in(&self, password: &str, memory: &mut HashMemory) -> anyhow::Result<String> {
        let salt_bytes = random_bytes::<16>()?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow!("salt: {e}"))?;
        let argon = self.argon();
        let hash = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), &salt_bytes, out, memory.blocks(&self.params))
                .map_err(|_| password_hash::Error::Crypto)
        })
        .map_err(|e| anyhow!("hashing: {e}"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| anyhow!("hashing: {e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(hash),
        };
        Ok(phc.to_string())
    }

    /// [`PasswordHashing::verify`] in `memory`.
    pub fn verify_in(&self, password: &str, hash: &str, memory: &mut HashMemory) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
            return false;
        };
        let version = parsed.version.map(Version::try_from).unwrap_or(Ok(Version::V0x13));
        let Ok(version) = version else { return false };
        let mut salt_buf = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        if argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, memory.blocks(&params))
            .is_err()
        {
            return false;
        }
        // `Output`'s equality takes the same time wherever the first difference is.
        Output::new(&out).is_ok_and(|o| o == expected)
    }
}

/// The memory a hash works in (`argon2_memory_kib`), kept by a hashing thread from one
/// hash to the next, so that each does not allocate and free it again.
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

impl HashMemory {
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let n = params.block_count();
        if self.0.len() != n {
            self.0 = vec![Block::default(); n];
        }
        &mut self.0
    }
}

/// A password hash works in `argon2_memory_kib` of memory (19 MiB by default). Run on
/// any thread, each allocating it afresh, a burst of sign-ins left the process hundreds
/// of MiB larger for good (the allocator keeps what each of its arenas once held). So
/// hashes run here, on a few threads of their own that each keep one such block, one
/// hash at a time, behind a bounded queue.
#[derive(Clone)]
pub struct PasswordPool {
    jobs: std::sync::mpsc::SyncSender<PoolJob>,
}

type PoolJob = Box<dyn FnOnce(&PasswordHashing, &mut HashMemory) + Send>;

/// The queue of waiting hashes is full: the caller answers `overloaded`.
#[derive(Debug)]
pub struct PoolBusy;

impl PasswordPool {
    /// Hashing threads: at most this many hashes' memory is in use at once.
    pub const THREADS: usize = 2;
    /// Hashes that may wait for a thread; past that, new ones are refused.
    pub const QUEUE: usize = 64;

    pub fn start(hashing: PasswordHashing) -> anyhow::Result<PasswordPool> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<PoolJob>(Self::QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..Self::THREADS {
            let (rx, hashing) = (rx.clone(), hashing.clone());
            std::thread::Builder::new().name(format!("password-{n}")).spawn(move || {
                let mut memory = HashMemory::default();
                loop {
                    // The lock is held only while taking a job; the hash runs without it.
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(&hashing, &mut memory),
                        // The pool was dropped: the server is stopping.
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(PasswordPool { jobs })
    }

    /// Runs `f` on a hashing thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordHashing, &mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, PoolBusy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: PoolJob = Box::new(move |h, memory| {
            let _ = tx.send(f(h, memory));
        });
        self.jobs.try_send(job).map_err(|_| PoolBusy)?;
        rx.await.map_err(|_| PoolBusy)
    }
}

pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow!("no randomness available: {e}"))?;
    Ok(b)
}

/// A fresh 256-bit token, URL-safe.
pub fn random_token() -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// Tokens carry 256 bits of randomness, so a fast digest is enough to store them.
pub fn token_digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Workspace id.
    pub ws: String,
    pub iat: i64,
    pub exp: i64,
    /// The sign-in session (refresh-token family): ending it ends its access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

/// Signs and checks access tokens (JWT, HS256).
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// Marks sealed text, so that text kept before sealing began still reads.
const SEALED: &str = "sealed.v1:";

impl TokenSigner {
    pub fn new(secret: &str) -> Self {
        TokenSigner {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("hmac takes any key length"))
    }

    /// The key that seals data kept at rest, apart from the signing key.
    fn sealing_key(&self) -> chacha20poly1305::Key {
        let mut mac = self.mac();
        mac.update(b"seal.v1");
        mac.finalize().into_bytes()
    }

    /// Encrypts and authenticates `plain` (ChaCha20-Poly1305, a random nonce), for
    /// keeping at rest what may hold a secret.
    pub fn seal(&self, plain: &str) -> anyhow::Result<String> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let nonce = random_bytes::<12>()?;
        let sealed = cipher
            .encrypt(&nonce.into(), plain.as_bytes())
            .map_err(|_| anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// What [`TokenSigner::seal`] sealed; text that was never sealed comes back as it is;
    /// none when it was sealed under another key or altered.
    pub fn open(&self, stored: &str) -> Option<String> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let Some(sealed) = stored.strip_prefix(SEALED) else {
            return Some(stored.to_string());
        };
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, body) = bytes.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let plain = cipher.decrypt(chacha20poly1305::Nonce::from_slice(nonce), body).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Signs a write one node forwards to another: `forward.<unix secs>.<body>`, which
    /// no token's signing input (base64 JSON) can equal.
    pub fn sign_forward(&self, ts: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(format!("forward.{ts}.").as_bytes());
        mac.update(body);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks a forwarded write's signature, in constant time.
    pub fn verify_forward(&self, ts: i64, body: &[u8], signature: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else { return false };
        let mut mac = self.mac();
        mac.update(format!("forward.{ts}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(JWT_HEADER);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Malformed)?;
        let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        // Only HS256 is ever issued; refusing anything else closes the "alg: none" hole.
        if header["alg"] != "HS256" {
            return Err(TokenError::Malformed);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(format!("{h}.{p}").as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sealed_text_opens_only_under_its_key_and_hides_what_it_holds() {
        let signer = TokenSigner::new("a-secret-of-enough-length-for-tests");
        let sealed = signer.seal(r#"{"token":"shoal_inbox_abc"}"#).unwrap();
        assert!(!sealed.contains("shoal_inbox_abc"));
        assert_eq!(signer.open(&sealed).as_deref(), Some(r#"{"token":"shoal_inbox_abc"}"#));
        assert_ne!(
            signer.seal("same").unwrap(),
            signer.seal("same").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(TokenSigner::new("another-secret-of-enough-length").open(&sealed), None);
        let mut altered = sealed.clone();
        altered.pop();
        assert_eq!(signer.open(&altered), None);
        assert_eq!(
            signer.open("{\"kept\":\"before sealing\"}").as_deref(),
            Some("{\"kept\":\"before sealing\"}")
        );
    }

    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u".into(),
            ws: "w".into(),
            iat: 0,
            exp,
            sid: Some("s".into()),
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let s = TokenSigner::new("a-secret-that-is-long-enough-for-tests");
        let t = s.sign(&claims(100));
        assert_eq!(s.verify(&t, 99).unwrap(), claims(100));
        assert_eq!(s.verify(&t, 100), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let s = TokenSigner::new("one-secret-one-secret-one-secret");
        let other = TokenSigner::new("two-secret-two-secret-two-secret");
        let t = s.sign(&claims(100));
        assert_eq!(other.verify(&t, 0), Err(TokenError::BadSignature));
        let forged = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            t.split('.').nth(1).unwrap(),
            ""
        );
        assert_eq!(s.verify(&forged, 0), Err(TokenError::Malformed));
        assert_eq!(s.verify("garbage", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn hashes_are_standard_phc_strings_that_the_argon2_crate_reads_and_writes_too() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let h = PasswordHashing::new(64, 1).unwrap();
        let mut memory = HashMemory::default();
        let ours = h.hash_in("correct horse", &mut memory).unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{ours}");
        assert!(h
            .argon()
            .verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap())
            .is_ok());
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = h.argon().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(h.verify_in("correct horse", &theirs, &mut memory));
        assert!(!h.verify_in("wrong horse", &theirs, &mut memory));
        // Stored with other costs (settings changed since): still checked, by its own.
        let other = PasswordHashing::new(128, 2).unwrap().hash("correct horse").unwrap();
        assert!(h.verify_in("correct horse", &other, &mut memory));
    }

    #[test]
    fn passwords_verify_only_with_the_right_secret() {
        let h = PasswordHashing::new(64, 1).unwrap();
        let hash = h.hash("correct horse").unwrap();
        assert!(h.verify("correct horse", &hash));
        assert!(!h.verify("wrong horse", &hash));
        assert!(!h.verify("correct horse", "not-a-hash"));
    }
}
