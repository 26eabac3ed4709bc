//! Signing in: operators' passwords (argon2id), TOTP second factors
//! (RFC 6238), one-time enrolment codes and server-side sessions.
//!
//! An operator gets an enrolment code (`clancy operators add`, the API, or
//! the daemon's first start for the first admin). Spending it sets their
//! password and, for admins and managers, makes a TOTP secret whose
//! `otpauth://` URI their authenticator app takes; their first sign-in with
//! a code from it confirms it. Admins and managers cannot sign in without
//! a code. Five wrong passwords or codes in a row lock the account, for
//! 15 minutes at first and twice as long after every further five.
//!
//! Secrets are never stored as given: passwords as argon2id hashes,
//! enrolment codes and session ids as SHA-256, the TOTP secret encrypted
//! with the host key and bound to its operator.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::operators::{Operator, Operators, Role};
use crate::store::{OrgStore, StoreError};

const AREA: &str = "accounts";

/// How long an enrolment code can be spent.
pub const ENROLMENT_HOURS: i64 = 72;
/// Wrong passwords or codes in a row that lock an account.
pub const LOCK_AFTER: u32 = 5;
/// The first lock's length; each further one doubles it (up to a day).
pub const FIRST_LOCK_MINUTES: i64 = 15;
/// The shortest password taken.
pub const MIN_PASSWORD: usize = 12;
/// The longest password taken (argon2 would take any; a bound keeps work bounded).
pub const MAX_PASSWORD: usize = 1024;

/// Why signing in or enrolling failed. The API says no more than
/// [`SignInError::public`] to the caller.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Unknown operator, wrong password or wrong code.
    #[error("wrong name, password or code")]
    Invalid,
    /// Too many failures.
    #[error("the account is locked until {0}")]
    Locked(DateTime<Utc>),
    /// The password was right; the role needs a TOTP code.
    #[error("this account needs a code from its authenticator app (totp)")]
    CodeRequired,
    /// An admin or manager who never enrolled a second factor.
    #[error(
        "this role needs a second factor, and the account has none: ask an admin for a new enrolment code"
    )]
    NotEnrolled,
    /// The enrolment code is unknown, spent or expired.
    #[error("the enrolment code is not valid (unknown, already used or expired)")]
    BadEnrolment,
    /// The new password is not acceptable.
    #[error("{0}")]
    WeakPassword(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What is kept to let an operator sign in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Credentials {
    /// argon2id PHC string.
    password: Option<String>,
    /// The TOTP secret, encrypted to this operator (hex).
    totp: Option<String>,
    /// Whether a code from it was ever accepted.
    totp_confirmed: bool,
    /// The last time step accepted (a code is accepted once).
    last_step: Option<u64>,
    /// Wrong passwords or codes since the last success.
    failures: u32,
    /// Locks so far (each doubles the next).
    locks: u32,
    /// Refused until then.
    locked_until: Option<DateTime<Utc>>,
}

/// A pending enrolment, found by the hash of its code.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Enrolment {
    name: String,
    expires_at: DateTime<Utc>,
}

/// What enrolling gives back.
#[derive(Debug)]
pub struct Enrolled {
    /// Who enrolled.
    pub operator: Operator,
    /// For admins and managers: the `otpauth://` URI of their new second
    /// factor, shown once.
    pub otpauth: Option<String>,
}

/// A server-side session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Who signed in.
    pub operator: String,
    /// The token state-changing requests must echo (`X-CSRF-Token`).
    pub csrf: String,
    /// When they signed in.
    pub created_at: DateTime<Utc>,
    /// Their last request (to the minute).
    pub last_seen: DateTime<Utc>,
}

/// How long sessions live.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Without a request for this long a session ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, whatever happens.
    pub absolute: Duration,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle: Duration::minutes(30),
            absolute: Duration::hours(12),
        }
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
    Ok(hex::encode(random))
}

/// A hash to verify against when the operator is unknown, so a wrong name
/// costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not anyone's password").unwrap_or_default())
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Io(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Io(format!("cannot hash a password: {e}")))
}

fn password_matches(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Whether `password` may be set for `name`; why not otherwise.
pub fn check_password(name: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD {
        return Err(format!(
            "the password is too short: at least {MIN_PASSWORD} characters"
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!(
            "the password is too long: at most {MAX_PASSWORD} bytes"
        ));
    }
    if password.to_lowercase().contains(&name.to_lowercase()) {
        return Err("the password must not contain the operator's name".into());
    }
    if password.chars().all(|c| password.starts_with(c)) {
        return Err("the password must not be one character repeated".into());
    }
    Ok(())
}

/// Whether `role` must sign in with a second factor.
pub fn needs_second_factor(role: Role) -> bool {
    role >= Role::Manager
}

/// One organisation's sign-in records.
pub struct Accounts {
    store: OrgStore,
}

impl Accounts {
    /// The accounts of `store`'s organisation.
    pub fn new(store: OrgStore) -> Accounts {
        Accounts { store }
    }

    fn operators(&self) -> Operators {
        Operators::new(self.store.clone())
    }

    fn credentials(&self, name: &str) -> Result<Credentials, StoreError> {
        Ok(self
            .store
            .get_json(AREA, format!("c/{name}").as_bytes())?
            .unwrap_or_default())
    }

    fn put_credentials(&self, name: &str, c: &Credentials) -> Result<(), StoreError> {
        self.store.put_json(AREA, format!("c/{name}").as_bytes(), c)
    }

    /// Whether `name` has a password (has enrolled).
    pub fn enrolled(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.credentials(name)?.password.is_some())
    }

    /// A new single-use enrolment code for `name`, valid
    /// [`ENROLMENT_HOURS`]; spending it replaces their password and second
    /// factor and ends their sessions.
    /// An operator has one code at a time: a new one replaces theirs, and
    /// expired codes of anyone are cleared on the way.
    pub fn invite(&self, name: &str, now: DateTime<Utc>) -> Result<String, StoreError> {
        let code = format!("enr_{}", random_hex(24)?);
        let enrolment = Enrolment {
            name: name.to_string(),
            expires_at: now + Duration::hours(ENROLMENT_HOURS),
        };
        let mut writes: Vec<crate::store::Write> = Vec::new();
        for (key, value) in self.store.scan(AREA, b"e/")? {
            let old: Enrolment = crate::store::decode(AREA, &value)?;
            if old.name == name || now >= old.expires_at {
                writes.push((key, None));
            }
        }
        writes.push((
            format!("e/{}", sha256_hex(&code)).into_bytes(),
            Some(crate::store::encode(&enrolment)?),
        ));
        self.store.write(AREA, writes)?;
        Ok(code)
    }

    /// Whether `code` is an enrolment code of this organisation (spent or
    /// not yet checked for expiry): which org a code belongs to.
    pub fn holds_enrolment(&self, code: &str) -> Result<bool, StoreError> {
        if !code.starts_with("enr_") || code.len() > 64 {
            return Ok(false);
        }
        let key = format!("e/{}", sha256_hex(code));
        Ok(self.store.get(AREA, key.as_bytes())?.is_some())
    }

    /// Spend an enrolment code: set the password, and for admins and
    /// managers make a new TOTP secret (returned as an `otpauth://` URI).
    pub fn enrol(
        &self,
        code: &str,
        password: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrolled, SignInError> {
        if !code.starts_with("enr_") || code.len() > 64 {
            return Err(SignInError::BadEnrolment);
        }
        let key = format!("e/{}", sha256_hex(code));
        let Some(enrolment) = self.store.get_json::<Enrolment>(AREA, key.as_bytes())? else {
            return Err(SignInError::BadEnrolment);
        };
        let Some(operator) = self.operators().get(&enrolment.name)? else {
            return Err(SignInError::BadEnrolment);
        };
        if now >= enrolment.expires_at {
            self.store.write(AREA, vec![(key.into_bytes(), None)])?;
            return Err(SignInError::BadEnrolment);
        }
        check_password(&operator.name, password).map_err(SignInError::WeakPassword)?;
        let mut credentials = Credentials {
            password: Some(hash_password(password)?),
            ..Credentials::default()
        };
        let mut otpauth = None;
        if needs_second_factor(operator.role) {
            let mut secret = [0u8; 20];
            getrandom::fill(&mut secret)
                .map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
            otpauth = Some(
                self.totp(&operator.name, secret.to_vec())?
                    .to_url()
                    .map_err(|e| StoreError::Io(format!("cannot make an otpauth URI: {e}")))?,
            );
            credentials.totp = Some(hex::encode(
                self.store
                    .keys()
                    .encrypt(&self.totp_identity(&operator.name), &secret),
            ));
        }
        // The code is spent in the same write that sets the credentials.
        let sessions = self.session_keys_of(&operator.name)?;
        let mut writes = vec![
            (key.into_bytes(), None),
            (
                format!("c/{}", operator.name).into_bytes(),
                Some(crate::store::encode(&credentials)?),
            ),
        ];
        writes.extend(sessions.into_iter().map(|k| (k, None)));
        self.store.write(AREA, writes)?;
        Ok(Enrolled { operator, otpauth })
    }

    fn totp_identity<'a>(&'a self, name: &'a str) -> [&'a [u8]; 3] {
        [self.store.org().as_bytes(), name.as_bytes(), b"totp"]
    }

    fn totp(&self, name: &str, secret: Vec<u8>) -> Result<totp_rs::Totp, StoreError> {
        totp_rs::Builder::new()
            .with_secret(secret)
            .with_account_name(format!("{name}@{}", self.store.org()))
            .with_issuer(Some("Clancy"))
            .build()
            .map_err(|e| StoreError::Io(format!("cannot make a TOTP: {e}")))
    }

    /// Check a password (and, for admins and managers, a TOTP code) and
    /// return the operator. Failures count towards a lock.
    pub fn sign_in(
        &self,
        name: &str,
        password: &str,
        code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Operator, SignInError> {
        let operator = self.operators().get(name)?;
        let mut credentials = match &operator {
            Some(o) => self.credentials(&o.name)?,
            None => Credentials::default(),
        };
        if let Some(until) = credentials.locked_until
            && now < until
        {
            return Err(SignInError::Locked(until));
        }
        let phc = credentials.password.as_deref().unwrap_or(decoy_hash());
        let right = password.len() <= MAX_PASSWORD && password_matches(password, phc);
        let (Some(operator), true, true) = (operator, right, credentials.password.is_some()) else {
            if let Some(o) = self.operators().get(name)? {
                self.fail(&o.name, &mut credentials, now)?;
            }
            return Err(SignInError::Invalid);
        };
        if needs_second_factor(operator.role) {
            let Some(sealed) = credentials.totp.as_deref() else {
                return Err(SignInError::NotEnrolled);
            };
            let Some(code) = code else {
                return Err(SignInError::CodeRequired);
            };
            let secret = hex::decode(sealed)
                .ok()
                .and_then(|s| {
                    self.store
                        .keys()
                        .decrypt(&self.totp_identity(&operator.name), &s)
                })
                .ok_or_else(|| StoreError::Tampered {
                    area: AREA.into(),
                    key: format!("c/{}", operator.name),
                })?;
            let time = u64::try_from(now.timestamp()).unwrap_or(0);
            let digits_only = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
            let step = if digits_only {
                self.totp(&operator.name, secret)?.check(code, time)
            } else {
                None
            };
            match step {
                Some(step) if credentials.last_step.is_none_or(|last| step > last) => {
                    credentials.last_step = Some(step);
                    credentials.totp_confirmed = true;
                }
                _ => {
                    self.fail(&operator.name, &mut credentials, now)?;
                    return Err(SignInError::Invalid);
                }
            }
        }
        credentials.failures = 0;
        credentials.locks = 0;
        credentials.locked_until = None;
        self.put_credentials(&operator.name, &credentials)?;
        Ok(operator)
    }

    fn fail(
        &self,
        name: &str,
        credentials: &mut Credentials,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        credentials.failures += 1;
        if credentials.failures >= LOCK_AFTER {
            let minutes = (FIRST_LOCK_MINUTES << credentials.locks.min(7)).min(24 * 60);
            credentials.locked_until = Some(now + Duration::minutes(minutes));
            credentials.locks += 1;
            credentials.failures = 0;
        }
        self.put_credentials(name, credentials)
    }

    /// Whether `name`'s account is locked now, and until when.
    pub fn locked_until(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .credentials(name)?
            .locked_until
            .filter(|until| now < *until))
    }

    /// Start a session for `operator`. Returns the secret for the cookie
    /// (shown to nobody else; only its hash is kept) and the session.
    pub fn start_session(
        &self,
        operator: &Operator,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), StoreError> {
        let secret = random_hex(32)?;
        let session = Session {
            operator: operator.name.clone(),
            csrf: random_hex(24)?,
            created_at: now,
            last_seen: now,
        };
        self.store.put_json(
            AREA,
            session_key(&operator.name, &secret).as_bytes(),
            &session,
        )?;
        Ok((format!("{}.{secret}", operator.name), session))
    }

    /// The operator and session a cookie value stands for, if it is live;
    /// an expired one is deleted. Refreshes `last_seen` (to the minute).
    pub fn session(
        &self,
        cookie: &str,
        limits: SessionLimits,
        now: DateTime<Utc>,
    ) -> Result<Option<(Operator, Session)>, StoreError> {
        let Some((name, secret)) = cookie.rsplit_once('.') else {
            return Ok(None);
        };
        if secret.len() != 64 || !crate::operators::valid_name(name) {
            return Ok(None);
        }
        let key = session_key(name, secret);
        let Some(mut session) = self.store.get_json::<Session>(AREA, key.as_bytes())? else {
            return Ok(None);
        };
        let operator = self.operators().get(&session.operator)?;
        let live = now < session.created_at + limits.absolute
            && now < session.last_seen + limits.idle
            && operator.is_some();
        let Some(operator) = operator.filter(|_| live) else {
            self.store.write(AREA, vec![(key.into_bytes(), None)])?;
            return Ok(None);
        };
        if now - session.last_seen >= Duration::minutes(1) {
            session.last_seen = now;
            self.store.put_json(AREA, key.as_bytes(), &session)?;
        }
        Ok(Some((operator, session)))
    }

    /// Delete every session that has ended (idle or too old); the timer
    /// does this, so sessions nobody presents again do not pile up.
    /// Returns how many.
    pub fn purge_sessions(
        &self,
        limits: SessionLimits,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut ended = Vec::new();
        for (key, value) in self.store.scan(AREA, b"s/")? {
            let session: Session = crate::store::decode(AREA, &value)?;
            if now >= session.created_at + limits.absolute || now >= session.last_seen + limits.idle
            {
                ended.push((key, None));
            }
        }
        let n = ended.len();
        self.store.write(AREA, ended)?;
        Ok(n)
    }

    /// End the session a cookie value stands for.
    pub fn end_session(&self, cookie: &str) -> Result<(), StoreError> {
        if let Some((name, secret)) = cookie.rsplit_once('.') {
            self.store
                .write(AREA, vec![(session_key(name, secret).into_bytes(), None)])?;
        }
        Ok(())
    }

    fn session_keys_of(&self, name: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .store
            .scan(AREA, format!("s/{name}/").as_bytes())?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// End every session of `name` (their role changed, or they re-enrol).
    pub fn end_sessions_of(&self, name: &str) -> Result<usize, StoreError> {
        let keys = self.session_keys_of(name)?;
        let n = keys.len();
        self.store
            .write(AREA, keys.into_iter().map(|k| (k, None)).collect())?;
        Ok(n)
    }
}

/// Sessions are kept under their operator, by the hash of their secret.
fn session_key(name: &str, secret: &str) -> String {
    format!("s/{name}/{}", sha256_hex(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> (tempfile::TempDir, Accounts, Operators) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: std::sync::Arc<dyn crate::store::Store> =
            std::sync::Arc::new(crate::store::SledStore::open(dir.path()).expect("store"));
        let org = OrgStore::new(
            store,
            "acme",
            std::sync::Arc::new(crate::keys::Keys::ephemeral()),
        );
        (dir, Accounts::new(org.clone()), Operators::new(org))
    }

    fn code_at(otpauth: &str, time: DateTime<Utc>) -> String {
        let totp = totp_rs::Totp::from_url(otpauth).expect("otpauth");
        totp.generate(time.timestamp() as u64).to_string()
    }

    #[test]
    fn a_manager_signs_in_with_password_and_a_code_used_once() {
        let (_dir, accounts, operators) = accounts();
        let now = Utc::now();
        let alice = Operator {
            name: "alice".into(),
            role: Role::Manager,
        };
        operators.put(&alice).expect("put");
        let code = accounts.invite("alice", now).expect("invite");
        let enrolled = accounts
            .enrol(&code, "correct horse battery", now)
            .expect("enrol");
        let otpauth = enrolled.otpauth.expect("a manager gets a second factor");
        assert!(otpauth.starts_with("otpauth://totp/"), "{otpauth}");
        assert!(matches!(
            accounts.enrol(&code, "correct horse battery", now),
            Err(SignInError::BadEnrolment)
        ));
        // A new code replaces the one before.
        let first = accounts.invite("alice", now).expect("invite");
        let second = accounts.invite("alice", now).expect("invite");
        assert!(matches!(
            accounts.enrol(&first, "correct horse battery", now),
            Err(SignInError::BadEnrolment)
        ));
        let enrolled = accounts
            .enrol(&second, "correct horse battery", now)
            .expect("the newest code works");
        let otpauth = enrolled.otpauth.expect("a manager gets a second factor");
        assert!(matches!(
            accounts.sign_in("alice", "correct horse battery", None, now),
            Err(SignInError::CodeRequired)
        ));
        let totp = code_at(&otpauth, now);
        accounts
            .sign_in("alice", "correct horse battery", Some(&totp), now)
            .expect("sign in");
        // The same code a second time is a replay.
        assert!(matches!(
            accounts.sign_in("alice", "correct horse battery", Some(&totp), now),
            Err(SignInError::Invalid)
        ));
    }

    #[test]
    fn five_wrong_passwords_lock_the_account_even_against_the_right_one() {
        let (_dir, accounts, operators) = accounts();
        let now = Utc::now();
        operators
            .put(&Operator {
                name: "bob".into(),
                role: Role::User,
            })
            .expect("put");
        let code = accounts.invite("bob", now).expect("invite");
        accounts
            .enrol(&code, "a long enough secret", now)
            .expect("enrol");
        for _ in 0..LOCK_AFTER {
            assert!(matches!(
                accounts.sign_in("bob", "guess guess guess", None, now),
                Err(SignInError::Invalid)
            ));
        }
        assert!(matches!(
            accounts.sign_in("bob", "a long enough secret", None, now),
            Err(SignInError::Locked(_))
        ));
        let later = now + Duration::minutes(FIRST_LOCK_MINUTES + 1);
        accounts
            .sign_in("bob", "a long enough secret", None, later)
            .expect("the lock ends");
    }

    #[test]
    fn a_totp_secret_moved_to_another_operator_does_not_decrypt() {
        let (_dir, accounts, operators) = accounts();
        let now = Utc::now();
        for name in ["carol", "dave"] {
            operators
                .put(&Operator {
                    name: name.into(),
                    role: Role::Admin,
                })
                .expect("put");
            let code = accounts.invite(name, now).expect("invite");
            accounts
                .enrol(&code, "twelve chars plus", now)
                .expect("enrol");
        }
        let carol = accounts.credentials("carol").expect("carol");
        let mut dave = accounts.credentials("dave").expect("dave");
        dave.totp = carol.totp.clone();
        accounts.put_credentials("dave", &dave).expect("put");
        let err = accounts
            .sign_in("dave", "twelve chars plus", Some("123456"), now)
            .expect_err("refused");
        assert!(
            matches!(err, SignInError::Store(StoreError::Tampered { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn sessions_end_when_idle_or_old_and_on_sign_out() {
        let (_dir, accounts, _) = accounts();
        let now = Utc::now();
        let (ops, limits) = (
            Operator {
                name: "erin".into(),
                role: Role::User,
            },
            SessionLimits::default(),
        );
        Operators::new(accounts.store.clone())
            .put(&ops)
            .expect("put");
        let (cookie, _) = accounts.start_session(&ops, now).expect("start");
        assert!(
            accounts
                .session(&cookie, limits, now)
                .expect("get")
                .is_some()
        );
        let idle = now + limits.idle + Duration::seconds(1);
        assert!(
            accounts
                .session(&cookie, limits, idle)
                .expect("get")
                .is_none()
        );
        let (cookie, _) = accounts.start_session(&ops, now).expect("start");
        let mut t = now;
        while t < now + limits.absolute - Duration::minutes(20) {
            t += Duration::minutes(20);
            assert!(accounts.session(&cookie, limits, t).expect("get").is_some());
        }
        let past = now + limits.absolute + Duration::seconds(1);
        assert!(
            accounts
                .session(&cookie, limits, past)
                .expect("get")
                .is_none()
        );
        let (cookie, _) = accounts.start_session(&ops, now).expect("start");
        accounts.end_session(&cookie).expect("end");
        assert!(
            accounts
                .session(&cookie, limits, now)
                .expect("get")
                .is_none()
        );
    }
}
