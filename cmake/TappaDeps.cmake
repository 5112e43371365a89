# Every third-party library the build includes or links, declared once, each found by name. When one
# is missing, configure stops with one line that names the Debian package to install — not a compiler
# error four minutes into the build, which is how a missing libstb-dev once went unnoticed (issue #13).
#
# The same package names are in scripts/install_deps.sh; tests/deps_test.sh (run inside the bare
# root by scripts/test_fresh_root.sh) removes each package in turn and checks that configure names it.
#
# Why a NOTICE line and then FATAL_ERROR: CMake re-wraps FATAL_ERROR text at 80 columns and indents
# it, so the package name could land on a second line; NOTICE prints the line as written (stderr).

function(tappa_require_package found what package)
  if(NOT ${found})
    message(NOTICE "tappa: missing dependency: ${what} not found; install the Debian package ${package} (apt-get install ${package}, or scripts/install_deps.sh)")
    message(FATAL_ERROR "missing dependency (the line above names the package)")
  endif()
endfunction()

find_package(Threads REQUIRED)  # part of libc

# Debian 12's pkg-config package is only a transitional name for pkgconf, which has the program.
find_package(PkgConfig QUIET)
tappa_require_package(PKG_CONFIG_FOUND "pkg-config" pkgconf)

# JSON: every file the CLI and the library write or read (results, checkpoints, the server's bodies).
find_package(nlohmann_json 3 QUIET)
tappa_require_package(nlohmann_json_FOUND "nlohmann-json (C++ JSON)" nlohmann-json3-dev)

# Command-line parsing of the `tappa` CLI.
find_package(CLI11 QUIET)
tappa_require_package(CLI11_FOUND "CLI11 (command-line parser)" libcli11-dev)

# stb: PNG writing (the report's plots, src/report/png.cpp) and reading (its test). Header-only.
find_path(TAPPA_STB_INCLUDE_DIR NAMES stb/stb_image_write.h stb/stb_image.h)
set(TAPPA_STB_FOUND FALSE)
if(TAPPA_STB_INCLUDE_DIR AND EXISTS "${TAPPA_STB_INCLUDE_DIR}/stb/stb_image.h"
   AND EXISTS "${TAPPA_STB_INCLUDE_DIR}/stb/stb_image_write.h")
  set(TAPPA_STB_FOUND TRUE)
endif()
tappa_require_package(TAPPA_STB_FOUND "stb (stb/stb_image_write.h)" libstb-dev)

# The HTTP server of `tappa serve` (src/server/server.cpp); its pkg-config file pulls in OpenSSL, zlib
# and Brotli, which libcpp-httplib-dev depends on.
pkg_check_modules(HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
tappa_require_package(HTTPLIB_FOUND "cpp-httplib (HTTP server)" libcpp-httplib-dev)

if(TAPPA_BUILD_TESTS)
  find_package(GTest QUIET)
  tappa_require_package(GTest_FOUND "GoogleTest" libgtest-dev)
  # The tests' tiny models and reference values are written by Python scripts in the project venv
  # (scripts/install_deps.sh creates it; python3-venv); a system python3 is the fallback.
  if(EXISTS ${CMAKE_SOURCE_DIR}/.cache/venv/bin/python)
    set(TAPPA_PYTHON ${CMAKE_SOURCE_DIR}/.cache/venv/bin/python)
  else()
    find_program(TAPPA_PYTHON python3)
  endif()
  tappa_require_package(TAPPA_PYTHON "python3 (the tests' data scripts)" python3-venv)
endif()

if(TAPPA_BUILD_BENCH)
  find_package(benchmark QUIET)
  tappa_require_package(benchmark_FOUND "Google Benchmark" libbenchmark-dev)
endif()

if(TAPPA_MPI)
  # openmpi-bin's mpicxx outlives libopenmpi-dev and names include directories that are gone with it;
  # FindMPI would then fail inside a try-compile with a screen of errors. Ask the wrapper first.
  set(TAPPA_MPI_HEADERS_FOUND TRUE)
  find_program(TAPPA_MPICXX NAMES mpicxx)
  if(TAPPA_MPICXX)
    execute_process(COMMAND ${TAPPA_MPICXX} --showme:incdirs OUTPUT_VARIABLE _incdirs
                    RESULT_VARIABLE _rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_rc EQUAL 0)  # Open MPI's wrapper; others do not know --showme and go straight to FindMPI
      set(TAPPA_MPI_HEADERS_FOUND FALSE)
      separate_arguments(_incdirs)
      foreach(_d IN LISTS _incdirs)
        if(EXISTS "${_d}/mpi.h")
          set(TAPPA_MPI_HEADERS_FOUND TRUE)
        endif()
      endforeach()
    endif()
  endif()
  tappa_require_package(TAPPA_MPI_HEADERS_FOUND "MPI for C++ (TAPPA_MPI=ON; mpi.h)" libopenmpi-dev)
  find_package(MPI QUIET COMPONENTS CXX)
  tappa_require_package(MPI_CXX_FOUND "MPI for C++ (TAPPA_MPI=ON)" libopenmpi-dev)
endif()
