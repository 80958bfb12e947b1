//! Who is on the other end of the control socket: the peer's uid comes
//! from `SO_PEERCRED` (see `server::serve`); its user name from the
//! system's user database, for the log line of each change.

use std::ffi::CStr;

/// The user name of `uid` (getpwuid_r: /etc/passwd, LDAP, sssd...), or
/// None. May block on a network user database: call it off the runtime.
pub(super) fn user_name(uid: Option<u32>) -> Option<String> {
    let uid = uid?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: zeroed is a valid passwd (pointers null, ints 0);
        // getpwuid_r writes only into pwd, buf (of the length given) and result.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 16 {
            buf.resize(buf.len().saturating_mul(4), 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
        return Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_root_and_no_uid_is_nobody() {
        assert_eq!(super::user_name(Some(0)).as_deref(), Some("root"));
        assert_eq!(super::user_name(None), None);
        assert_eq!(super::user_name(Some(4_000_000_000)), None);
    }
}
