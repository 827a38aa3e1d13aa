//! Public-key JWTs (RS256, ES256) and the classic algorithm attacks against
//! them: a token verifies only with the algorithm its key was configured for.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use marketmux_gateway::auth::JwtVerifier;
use serde_json::json;

const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("keys/ec_public.pem");

fn claims() -> serde_json::Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    json!({ "sub": "42", "exp": exp })
}

fn sign(alg: Algorithm, key: &EncodingKey) -> String {
    encode(&Header::new(alg), &claims(), key).unwrap()
}

#[test]
fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    let rsa = JwtVerifier::from_public_key_pem(RSA_PUBLIC).expect("RSA public key");
    let token = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    );
    assert_eq!(rsa.verify(&token).expect("RS256 token").user_id, 42);

    let ec = JwtVerifier::from_public_key_pem(EC_PUBLIC).expect("EC public key");
    let token = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    );
    assert_eq!(ec.verify(&token).expect("ES256 token").user_id, 42);

    // Each key accepts only its own algorithm's tokens.
    assert!(rsa.verify(&token).is_err(), "ES256 token on the RSA key");
    assert!(JwtVerifier::from_public_key_pem(b"not a key").is_err());
}

#[test]
fn algorithm_confusion_is_refused() {
    let rsa = JwtVerifier::from_public_key_pem(RSA_PUBLIC).unwrap();
    // HS256 "signed" with the public key as the HMAC secret: the attack on
    // verifiers that let the token pick the algorithm.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC));
    assert!(
        rsa.verify(&forged).is_err(),
        "HS256 with the public key as secret"
    );

    // alg "none" with no signature, against both kinds of verifier.
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg":"none","typ":"JWT"})),
        b64(claims())
    );
    assert!(rsa.verify(&unsigned).is_err(), "alg none on the RSA key");
    let hs = JwtVerifier::hs256(b"a-shared-secret-of-at-least-32-bytes").unwrap();
    assert!(
        hs.verify(&unsigned).is_err(),
        "alg none on the HS256 secret"
    );

    // An RS256 token presented to an HS256 node is refused too.
    let rs = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    );
    assert!(hs.verify(&rs).is_err(), "RS256 token on the HS256 secret");
}
