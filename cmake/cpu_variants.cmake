# The CPU kernels, compiled once per instruction-set variant (issue #22; src/backend/cpu/isa.h and
# dispatch.h say how the variants are kept apart and chosen at run time). Included by CMakeLists.txt
# after tappa_core is defined.
#
# Every source of src/backend/cpu except the ISA-free ones (thread_pool.cpp, dispatch.cpp) is a kernel
# source: the whole CPU backend — matmul, attention, the elementwise ops — not only the SIMD loops,
# because GCC contracts a*b+c into an FMA wherever -mfma allows it in C++, so even the "plain" loops
# round differently per variant and must come from the variant that is running.
#
# One OBJECT library per variant, its objects added to tappa_core; the rest of the library is built
# for baseline x86-64 (no -m flags), so the binary runs on any x86-64 CPU and picks its kernels there.
file(GLOB TAPPA_CPU_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cpu/*.cpp)
list(FILTER TAPPA_CPU_KERNEL_SOURCES EXCLUDE REGEX "/(thread_pool|dispatch)[.]cpp$")

set(TAPPA_CPU_VARIANTS scalar)
set(TAPPA_CPU_VARIANT_FLAGS_scalar "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  # Exactly what dispatch.cpp checks with __builtin_cpu_supports before it picks a variant.
  list(APPEND TAPPA_CPU_VARIANTS avx2 avx512)
  set(TAPPA_CPU_VARIANT_FLAGS_avx2 -mavx2 -mfma -mf16c)
  set(TAPPA_CPU_VARIANT_FLAGS_avx512 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni)
endif()

set(TAPPA_CPU_VARIANT_TARGETS "")
foreach(v ${TAPPA_CPU_VARIANTS})
  add_library(tappa_cpu_${v} OBJECT ${TAPPA_CPU_KERNEL_SOURCES})
  target_include_directories(tappa_cpu_${v} PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(tappa_cpu_${v} PRIVATE Threads::Threads nlohmann_json::nlohmann_json)
  target_compile_definitions(tappa_cpu_${v} PRIVATE TAPPA_ISA_NS=${v})
  target_compile_options(tappa_cpu_${v} PRIVATE ${TAPPA_CPU_VARIANT_FLAGS_${v}})
  target_sources(tappa_core PRIVATE $<TARGET_OBJECTS:tappa_cpu_${v}>)
  string(TOUPPER ${v} V)
  list(APPEND TAPPA_CPU_HAVE_DEFS TAPPA_CPU_HAVE_${V}=1)
  list(APPEND TAPPA_CPU_VARIANT_TARGETS tappa_cpu_${v})
endforeach()
set_source_files_properties(${CMAKE_SOURCE_DIR}/src/backend/cpu/dispatch.cpp
                            PROPERTIES COMPILE_DEFINITIONS "${TAPPA_CPU_HAVE_DEFS}")
message(STATUS "tappa: CPU kernel variants ${TAPPA_CPU_VARIANTS} (picked at run time; TAPPA_CPU_VARIANT pins one)")
