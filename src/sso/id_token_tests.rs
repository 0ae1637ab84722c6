//! The validator against tokens signed here with keys made for the test
//! (openssl, committed below): every check must refuse its own bad token.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://id.example.com";
const CLIENT: &str = "portcullis";
const NONCE: &str = "n-0S6_WzA2Mj";

const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDS2gS24m2fGlKm\njgalLK4SeBH+Qq3YgDhHkwoMSvt551yQ8oOciuVlRer0eThNExnMd+K/XhSsTEVX\nWYVkgHMkNS7yrg2e+hnMNQI5fribCu0iGSQE1f7G4o06JIFFeP/OYz1EYyHsW2Q/\nmOn4zorhCGbYlCMQ65I0Yv9x4qaJ7P3owNQ2J+3oiGD0VxcQA9kDPit9uNV9FcGO\nDvk11owJEw1qZGyw90uC2tQTdm1OUMTvf4Tso57kL34Q5shD1nadAeX9hy7i5BmH\nevWrQr04x5mUIdBp0gm/tec0L6U7juhJ+7UrGCfevxAJ6S3UuYxWDXd7gwaJzS3B\nIMZhlYTDAgMBAAECggEAJtMdRh2oaMD8kg2Z3KU/AkiYq5RUlYZ6lndVRNEzwA0h\nhtEY+eS7e6vlqRF/E/Yd7H/wwSMONHGw3PYvcUOTsAmY9Pemq2zK/kaOe87BKE9Z\nPcuaTcenq7CAp8GcChJPLA4q9GI6l152tZ0vC/DgMrKM2XlhgZaW682E0tAUsVWb\n/2G7AShtAZ18InQg1acWtnMax3/8HQMatVzsEGgNgEJwWVyyfkE+qmmHBGFdBYOk\nino/Jk5gpQGawon/hGmkYBM28yIoBj/Aone0GXyVTHJkBGP+H//QKxZSZlxpBmV/\n0w9tpqt+AyfBWbcv/2isxa0PUy2QHSrPMFoF9iaTXQKBgQDzEDvl+nDG3DP5AVpV\ncc1HezTmX+RQG5a9JNEQX/Dgr6hAZCrZYscXR2WZjiTltbzzsXHmhdnYlx7M5mXY\nlaLiWEV1Gaeqh3cRrpQuApfw15Rf9rhKzJMnLi+N2LLdegozydi6Uyrp9EfwRNAw\nDGKo1G2lOaO21/HQxf6uCFBO/wKBgQDeEuU2eCUfWLttM3DFBFQRxOydmRE7rD/s\nDuDFXo4nJciYprJ/kRpSzxUDlBYBWISrXLuwBMSvLiP4TdynX9rTA9G/+qpRzmDz\npZlOERbYiOB7CG0QeH5itrlIvjCKIiMVivCXlL/h6FlOxSkT3/qPvvqQb5HU4cqj\nlqCZIp9OPQKBgQCbt7DIG3QY0oYxZp560xeSTeqMFK7ua15c+rM9bFmjeKWv6vxQ\nnKmzzjfW8mvNBmtxLCMubl4sFlTTLF/fK65Yl/iXlsIFzBeKKnAgMeUplNMnz6Yt\ntXYoybwJgeTFYyQaHZxNcm6xx6A2278MqUKjqsQ77/tkbmArQk1xLT5V/QKBgGQZ\ntlIwI+OWVp2pk0prYg3Eaze6uGbihMm+BxlQPtlskZglg842tNvg1kMPrD+dC+hG\nW5/C9nlUXghd6HlVnsiBLznPHpjTYyZQXeMvltGyGSW8LZVACxAp9yjP+gc5zgC2\n6S4acce9uQvlmVeJHWNQHZefgueng3Trv6ZnUdGtAoGAHhIEUwy8NH21Bm//s54O\nsBMDbM5wEXfHfSzY4EsPxkdTm4K7gw03XMs/Pqh0wb5+u4pSHWyKHSz2Zd4U73QO\nYpjnsmc2vnZvJHw/YjcRfd+NkBOzi/QWsYCJ+XrSqJ4esMP5oPaaHLTE1T8sgKoz\nDp86RzAgG2zUO+ximju/RTQ=\n-----END PRIVATE KEY-----";
const EC_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1BuJyax0eeZL0e0d\nWI8jfOmuJBKA04rfmL+slr2/3VWhRANCAAQ7BNWoMOdPxkhgID0O9hVHZFdK0bc4\nuzoj3+EyWEtwDNtDMn9I8isDXluL/JarflJUlKPwwcXP4VArLn+50nvq\n-----END PRIVATE KEY-----";

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PEM.as_bytes()).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "248289761001", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 5,
        "nonce": NONCE, "email": "ann@example.com", "email_verified": true, "name": "Ann",
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn check(token: &str, key: &Jwk) -> Result<IdClaims, IdTokenError> {
    let p = peek(token)?;
    verify(
        token,
        &p,
        key,
        &Expect {
            issuer: ISS,
            client_id: CLIENT,
            nonce: NONCE,
            now: NOW,
        },
    )
}

fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    c
}

#[test]
fn rs256_and_es256_tokens_verify() {
    // jsonwebtoken checks exp against the real clock: give these a far expiry.
    let far = with(|c| {
        c.insert("exp".into(), json!(u64::MAX / 4));
    });
    let c = check(&sign(Algorithm::RS256, &rsa(), "r1", &far), &jwk(&rsa(), Algorithm::RS256, "r1")).unwrap();
    assert_eq!(c.email.as_deref(), Some("ann@example.com"));
    assert!(c.email_verified);
    assert_eq!(c.sub, "248289761001");
    check(&sign(Algorithm::ES256, &ec(), "e1", &far), &jwk(&ec(), Algorithm::ES256, "e1")).unwrap();
    check(&sign(Algorithm::PS256, &rsa(), "r1", &far), &jwk(&rsa(), Algorithm::PS256, "r1")).unwrap();
}

fn far(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    with(|c| {
        c.insert("exp".into(), json!(u64::MAX / 4));
        f(c)
    })
}

#[test]
fn each_claim_check_refuses_its_bad_token() {
    let key = jwk(&rsa(), Algorithm::RS256, "r1");
    let bad = |f: fn(&mut serde_json::Map<String, Value>)| check(&sign(Algorithm::RS256, &rsa(), "r1", &far(f)), &key).unwrap_err();
    assert_eq!(
        bad(|c| {
            c.insert("iss".into(), json!("https://id.example.com/"));
        }),
        IdTokenError::Issuer
    );
    assert_eq!(
        bad(|c| {
            c.insert("iss".into(), json!("https://evil.example.com"));
        }),
        IdTokenError::Issuer
    );
    assert_eq!(
        bad(|c| {
            c.insert("aud".into(), json!("someone-else"));
        }),
        IdTokenError::Audience
    );
    // Several audiences: azp must name us.
    assert_eq!(
        bad(|c| {
            c.insert("aud".into(), json!([CLIENT, "other"]));
        }),
        IdTokenError::Audience
    );
    assert_eq!(
        bad(|c| {
            c.insert("aud".into(), json!([CLIENT, "other"]));
            c.insert("azp".into(), json!("other"));
        }),
        IdTokenError::Audience
    );
    assert_eq!(
        bad(|c| {
            c.insert("nonce".into(), json!("another-nonce"));
        }),
        IdTokenError::Nonce
    );
    assert_eq!(
        bad(|c| {
            c.remove("nonce");
        }),
        IdTokenError::Nonce
    );
    assert_eq!(
        bad(|c| {
            c.insert("iat".into(), json!(NOW + SKEW_SECS + 5));
        }),
        IdTokenError::IssuedAt
    );
    assert_eq!(
        bad(|c| {
            c.remove("iat");
        }),
        IdTokenError::IssuedAt
    );
    assert_eq!(
        bad(|c| {
            c.remove("sub");
        }),
        IdTokenError::Missing("sub")
    );
    // Expired in real time (jsonwebtoken's clock), beyond the skew.
    let now = jsonwebtoken::get_current_timestamp();
    assert_eq!(
        bad(|c| {
            c.insert("exp".into(), json!(1_000_000));
        }),
        IdTokenError::Expired
    );
    let just_expired = with(|c| {
        c.insert("exp".into(), json!(now - SKEW_SECS - 5));
    });
    assert_eq!(
        check(&sign(Algorithm::RS256, &rsa(), "r1", &just_expired), &key).unwrap_err(),
        IdTokenError::Expired
    );
    // Within the skew: accepted.
    let in_skew = with(|c| {
        c.insert("exp".into(), json!(now - 10));
    });
    check(&sign(Algorithm::RS256, &rsa(), "r1", &in_skew), &key).unwrap();
    // Several audiences with azp = us: accepted.
    let ok = far(|c| {
        c.insert("aud".into(), json!(["other", CLIENT]));
        c.insert("azp".into(), json!(CLIENT));
    });
    check(&sign(Algorithm::RS256, &rsa(), "r1", &ok), &key).unwrap();
    // email_verified as the string some providers send.
    let s = far(|c| {
        c.insert("email_verified".into(), json!("true"));
    });
    assert!(check(&sign(Algorithm::RS256, &rsa(), "r1", &s), &key).unwrap().email_verified);
    let f = far(|c| {
        c.insert("email_verified".into(), json!(false));
    });
    assert!(!check(&sign(Algorithm::RS256, &rsa(), "r1", &f), &key).unwrap().email_verified);
}

#[test]
fn signatures_and_algorithms_are_enforced() {
    let rkey = jwk(&rsa(), Algorithm::RS256, "r1");
    let token = sign(Algorithm::RS256, &rsa(), "r1", &far(|_| {}));
    // A changed payload breaks the signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = b64.encode(
        serde_json::to_vec(&far(|c| {
            c.insert("email".into(), json!("boss@example.com"));
        }))
        .unwrap(),
    );
    parts[1] = &forged;
    assert_eq!(check(&parts.join("."), &rkey).unwrap_err(), IdTokenError::Signature);
    // Signed by another key (the EC key presented as the RSA one's kid).
    let other = sign(Algorithm::ES256, &ec(), "r1", &far(|_| {}));
    assert_eq!(check(&other, &rkey).unwrap_err(), IdTokenError::KeyMismatch);
    // alg: none.
    let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64.encode(serde_json::to_vec(&far(|_| {})).unwrap());
    assert_eq!(
        check(&format!("{none_header}.{payload}."), &rkey).unwrap_err(),
        IdTokenError::Malformed
    );
    // HS256 keyed with the provider's public key (key confusion).
    let public_as_secret = EncodingKey::from_secret(serde_json::to_string(&rkey).unwrap().as_bytes()).unwrap();
    let hs = sign(Algorithm::HS256, &public_as_secret, "r1", &far(|_| {}));
    assert!(matches!(check(&hs, &rkey).unwrap_err(), IdTokenError::Algorithm(_)));
    // An RSA token against a key that says it is for PS256 only.
    let ps_key = jwk(&rsa(), Algorithm::PS256, "r1");
    assert_eq!(check(&token, &ps_key).unwrap_err(), IdTokenError::KeyMismatch);
    // Garbage.
    assert_eq!(check("not.a.jwt", &rkey).unwrap_err(), IdTokenError::Malformed);
    assert_eq!(check("", &rkey).unwrap_err(), IdTokenError::Malformed);
}
